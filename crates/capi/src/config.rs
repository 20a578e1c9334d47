//! Client configuration the way librados keeps it, on
//! `quarry_common::options`: one value per option and per source level, the
//! effective value being the highest level present (default < monitor
//! config database < config file <
//! environment < `rados_conf_set` < pool < image), regardless of the order
//! of calls. Unknown names are `ENOENT`, bad values `EINVAL`, start-up-only
//! options after `rados_connect` `EPERM`.
//!
//! The one librados detail added here: `rados_conf_set` takes names exactly
//! as Ceph spells them (`rbd-cache-size` is `ENOENT` there, unlike on a
//! command line).

use std::path::PathBuf;

use quarry_common::entity::EntityName;
use quarry_common::options::{self as opts, parse_ceph_args};
use quarry_common::Errno;

/// Where a value came from; higher wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The monitors' config database (fetched by `rados_connect`).
    Mon,
    /// The config file (`rados_conf_read_file`).
    File,
    /// `CEPH_ARGS` and `CEPH_KEYRING` (parsed in `rados_create`).
    Env,
    /// `rados_conf_parse_argv`.
    CmdLine,
    /// `rados_conf_set` (QEMU's `:key=value` pairs and its `rbd_cache`).
    Override,
    /// Pool metadata `conf_rbd_*` (`rbd config pool set`).
    Pool,
    /// Image metadata `conf_rbd_*` (`rbd config image set`).
    Image,
}

impl Level {
    fn common(self) -> opts::Level {
        match self {
            Level::Mon => opts::Level::Mon,
            Level::File => opts::Level::File,
            Level::Env => opts::Level::Env,
            Level::CmdLine => opts::Level::CmdLine,
            Level::Override => opts::Level::Override,
            Level::Pool => opts::Level::Pool,
            Level::Image => opts::Level::Image,
        }
    }
}

/// A client's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    inner: opts::Config,
}

impl Config {
    /// A configuration for `type.id` (cluster `ceph` unless `cluster` is
    /// given, as `rados_create2` does). `EINVAL` for a malformed name.
    pub fn new(entity_type: &str, id: &str, cluster: Option<&str>) -> Result<Config, Errno> {
        let entity =
            EntityName::parse(&format!("{entity_type}.{id}")).map_err(|_| Errno::EINVAL)?;
        let inner = match cluster {
            Some(c) => opts::Config::with_cluster(entity, c),
            None => opts::Config::new(entity),
        };
        Ok(Config { inner })
    }

    /// `type.id`.
    pub fn entity_name(&self) -> String {
        self.inner.entity().to_string()
    }

    /// The cluster name (`$cluster`).
    pub fn cluster(&self) -> String {
        self.inner.cluster().to_string()
    }

    /// After `rados_connect`: start-up-only options refuse overrides (EPERM).
    pub fn mark_started(&mut self) {
        self.inner.mark_started();
    }

    /// Set an option at a level after validation.
    pub fn set(&mut self, level: Level, name: &str, value: &str) -> Result<(), Errno> {
        if level >= Level::Override && name.contains('-') {
            return Err(Errno::ENOENT);
        }
        self.inner
            .set(name, value, level.common())
            .map_err(|e| e.errno())
    }

    /// Replace the monitor-level values with `entries` (name, value); values
    /// this build refuses are skipped. Returns how many were applied.
    pub fn set_mon_values(&mut self, entries: &[(String, String)]) -> usize {
        self.inner.clear_level(opts::Level::Mon);
        entries
            .iter()
            .filter(|(k, v)| self.inner.set(k, v, opts::Level::Mon).is_ok())
            .count()
    }

    /// Effective value with metavariables expanded. `ENOENT` if unknown.
    pub fn get(&self, name: &str) -> Result<String, Errno> {
        if name.contains('-') {
            return Err(Errno::ENOENT);
        }
        self.inner.get(name).ok_or(Errno::ENOENT)
    }

    /// Every `rbd_*` option with its effective value and librbd's source
    /// (`rbd_config_source_t`: 0 config, 1 pool, 2 image), by name.
    pub fn rbd_options(&self) -> Vec<(String, String, i32)> {
        let mut out: Vec<(String, String, i32)> = opts::all_options()
            .into_iter()
            .filter(|d| d.name.starts_with("rbd_"))
            .filter_map(|d| {
                let (_, level) = self.inner.get_with_source(d.name).ok()?;
                let value = self.inner.get(d.name)?;
                let source = match level {
                    opts::Level::Pool => 1,
                    opts::Level::Image => 2,
                    _ => 0,
                };
                Some((d.name.to_string(), value, source))
            })
            .collect();
        out.sort();
        out
    }

    /// Effective bool (false if unknown or not a bool).
    pub fn get_bool(&self, name: &str) -> bool {
        self.inner.get_bool(name).unwrap_or(false)
    }

    /// Effective unsigned number (uint, size, secs, features); 0 if unknown.
    pub fn get_u64(&self, name: &str) -> u64 {
        self.inner.get_u64(name).unwrap_or(0)
    }

    /// Effective float; 0.0 if unknown.
    pub fn get_f64(&self, name: &str) -> f64 {
        self.inner.get_f64(name).unwrap_or(0.0)
    }

    /// Apply `CEPH_ARGS`-style arguments (`--opt value`, `--id X`, …) at the
    /// command-line level (`rados_conf_parse_argv`).
    pub fn parse_args(&mut self, args: &[String]) -> Result<(), Errno> {
        let parsed = parse_ceph_args(args).map_err(|e| e.errno())?;
        if let Some(e) = parsed.entity.clone() {
            self.inner.set_entity(e);
        }
        self.inner
            .apply_args(&parsed, opts::Level::CmdLine)
            .map_err(|e| e.errno())
    }

    /// `rados_conf_parse_env`: a `CEPH_ARGS`-style variable at env level.
    pub fn parse_env_string(&mut self, s: &str) -> Result<(), Errno> {
        let parsed = self
            .inner
            .apply_arg_string(s, opts::Level::Env)
            .map_err(|e| e.errno())?;
        if let Some(e) = parsed.entity {
            self.inner.set_entity(e);
        }
        Ok(())
    }

    /// Read `CEPH_ARGS` and `CEPH_KEYRING` (what `rados_create` does).
    /// Malformed environment options are ignored, as librados does.
    pub fn apply_env(&mut self) {
        if let Ok(parsed) = self.inner.apply_env(&|k| std::env::var(k).ok()) {
            if let Some(e) = parsed.entity {
                self.inner.set_entity(e);
            }
        }
    }

    /// `rados_conf_read_file`: `None` searches `$CEPH_CONF` or the default
    /// list; a path may be a `,`/`;` list. The first existing file wins.
    pub fn read_file(&mut self, path: Option<&str>) -> Result<(), Errno> {
        let env = std::env::var("CEPH_CONF").ok();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match self
            .inner
            .read_conf_file(path, env.as_deref(), home.as_deref())
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.errno() == Errno::EINVAL {
                    eprintln!("parse error: {e}");
                }
                Err(e.errno())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_beat_call_order() {
        let mut c = Config::new("client", "admin", None).unwrap();
        c.set(Level::Override, "rbd_cache_size", "6").unwrap();
        c.set(Level::File, "rbd_cache_size", "7").unwrap();
        assert_eq!(c.get("rbd_cache_size").unwrap(), "6");
        assert_eq!(c.get("rbd_cache").unwrap(), "true");
        assert_eq!(
            c.set(Level::Override, "no_such_opt", "1"),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            c.set(Level::Override, "rbd_cache", "maybe"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            c.set(Level::Override, "rbd_cache_policy", "WriteBack"),
            Err(Errno::EINVAL)
        );
        c.set(Level::Override, "rbd_cache_max_dirty", "32M")
            .unwrap();
        assert_eq!(c.get_u64("rbd_cache_max_dirty"), 32 << 20);
        assert_eq!(
            c.set(Level::Override, "rbd-cache-size", "1"),
            Err(Errno::ENOENT)
        );
        c.set(
            Level::Override,
            "rbd_default_features",
            "layering,exclusive-lock",
        )
        .unwrap();
        assert_eq!(c.get_u64("rbd_default_features"), 5);
        // Image metadata beats rados_conf_set.
        c.set(Level::Override, "rbd_cache", "true").unwrap();
        c.set(Level::Image, "rbd_cache", "false").unwrap();
        assert!(!c.get_bool("rbd_cache"));
        c.mark_started();
        assert_eq!(
            c.set(Level::Override, "mon_host", "1.2.3.4"),
            Err(Errno::EPERM)
        );
        c.set(Level::Override, "rbd_cache", "false").unwrap();
    }

    #[test]
    fn conf_file_sections_and_expansion() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prod.conf");
        std::fs::write(
            &p,
            "[global]\nrbd cache size = 100 ; c\n[client]\nrbd_cache_size=200\n\
             [client.admin]\nkeyring = /x/$cluster.$name.keyring\n[client.other]\nrbd_cache_size=300\n",
        )
        .unwrap();
        let mut c = Config::new("client", "admin", None).unwrap();
        c.read_file(Some(p.to_str().unwrap())).unwrap();
        assert_eq!(c.get("rbd_cache_size").unwrap(), "200");
        assert_eq!(c.get("keyring").unwrap(), "/x/prod.client.admin.keyring");
        assert_eq!(
            c.read_file(Some("/nonexistent/ceph.conf")),
            Err(Errno::ENOENT)
        );
    }
}

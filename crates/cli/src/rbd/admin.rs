//! Administrative `rbd` commands: `feature enable|disable`, `namespace
//! create|ls|rm` and `config pool|image get|set|rm|list` (the per-pool and
//! per-image librbd option overrides the C library applies at image open).

use quarry_common::options::{
    all_options, canonicalize, find_option, normalize_name, RBD_FEATURE_NAMES,
};
use quarry_common::spec::ImageSpec;
use quarry_common::Errno;
use serde_json::{json, Value};

use super::{Align, CmdError, CmdResult, Ctx, Progress, Table};

/// Metadata key prefix under which librbd keeps config overrides (pool
/// metadata on `rbd_info`, image metadata in the header), as Ceph does.
pub const CONF_PREFIX: &str = "conf_";

/// Features `rbd feature enable|disable` may change on Ceph
/// (`RBD_FEATURES_MUTABLE`, plus the disable-only deep-flatten).
const MUTABLE: &[&str] = &["exclusive-lock", "object-map", "fast-diff", "journaling"];

/// Reject `image@snap` for commands that act on the head only (Ceph's text).
fn head_spec(ctx: &Ctx, image: &str) -> CmdResult<ImageSpec> {
    let spec = ctx.spec(image)?;
    if spec.snap.is_some() {
        return Err(CmdError::new(
            Errno::EINVAL,
            "snapshot name specified for a command that doesn't use it",
        ));
    }
    Ok(spec)
}

/// Parse feature names (each argument may be a comma list) into bits.
fn feature_bits(names: &[String]) -> CmdResult<u64> {
    if names.is_empty() {
        return Err(CmdError::new(
            Errno::EINVAL,
            "at least one feature name must be specified",
        ));
    }
    let mut bits = 0;
    for n in names.iter().flat_map(|s| s.split(',')).map(str::trim) {
        let bit = RBD_FEATURE_NAMES
            .iter()
            .find(|(name, _)| *name == n)
            .map(|(_, b)| *b)
            .ok_or_else(|| CmdError::new(Errno::EINVAL, format!("invalid feature name: {n}")))?;
        bits |= bit;
    }
    Ok(bits)
}

fn names_of(bits: u64) -> String {
    super::cmds::feature_names(bits).join(", ")
}

/// `rbd feature enable|disable IMAGE FEATURE...`.
pub async fn feature(ctx: &Ctx, image: &str, names: &[String], enable: bool) -> CmdResult {
    let spec = head_spec(ctx, image)?;
    let bits = feature_bits(names)?;
    let fail = |why: String, errno: Errno| {
        CmdError::new(errno, why).then(format!("failed to update image features: {errno}"))
    };
    let immutable: u64 = RBD_FEATURE_NAMES
        .iter()
        .filter(|(n, _)| !MUTABLE.contains(n) && *n != "deep-flatten")
        .map(|(_, b)| *b)
        .sum();
    if bits & immutable != 0 {
        return Err(fail(
            format!(
                "cannot update immutable features: {}",
                names_of(bits & immutable)
            ),
            Errno::EINVAL,
        ));
    }
    if bits & quarry_rbd::FEATURE_DEEP_FLATTEN != 0 {
        // Ceph: deep-flatten may only be disabled (RBD_FEATURES_DISABLE_ONLY).
        return Err(if enable {
            fail(
                "cannot enable disable-only feature: deep-flatten".into(),
                Errno::EINVAL,
            )
        } else {
            fail(
                "disabling deep-flatten is not supported by Quarry yet".into(),
                Errno::EOPNOTSUPP,
            )
        });
    }
    if bits & quarry_rbd::FEATURE_JOURNALING != 0 {
        return Err(fail(
            "journaling is not supported by Quarry (no rbd-mirror)".into(),
            Errno::EOPNOTSUPP,
        ));
    }
    let img = ctx.open(&spec, false).await?;
    img.update_features(bits, enable).await.map_err(|e| {
        CmdError::new(e.errno(), e.to_string())
            .then(format!("failed to update image features: {}", e.errno()))
    })
}

/// `rbd object-map rebuild IMAGE`: the head's object map made again from
/// the objects that exist.
pub async fn object_map_rebuild(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = head_spec(ctx, image)?;
    let img = ctx.open(&spec, false).await?;
    let p = Progress::new(ctx.g.progress(), "Object Map Rebuild", 1);
    let r = img
        .rebuild_object_map()
        .await
        .map_err(|e| CmdError::rbd("rebuilding object map failed", &e).then(e.to_string()));
    p.finish(r)
}

/// `rbd object-map check IMAGE`: fails (`EINVAL`, with what is wrong)
/// when the stored map is damaged or calls an existing object absent.
pub async fn object_map_check(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = head_spec(ctx, image)?;
    let img = ctx.open(&spec, true).await?;
    let p = Progress::new(ctx.g.progress(), "Object Map Check", 1);
    let r = match img.check_object_map().await {
        Ok(Some((0, _))) => Ok(()),
        Ok(Some((missing, _))) => Err(CmdError::new(
            Errno::EINVAL,
            format!(
                "object map is invalid: {missing} existing object(s) marked absent; \
                 run 'rbd object-map rebuild {image}'"
            ),
        )),
        Ok(None) => Err(CmdError::new(
            Errno::EINVAL,
            format!("object map is missing or damaged; run 'rbd object-map rebuild {image}'"),
        )),
        Err(e) => Err(CmdError::rbd("checking object map failed", &e).then(e.to_string())),
    };
    p.finish(r)
}

/// `rbd namespace create|rm` target: `POOL/NS` or `--pool P --namespace NS`.
fn ns_target(ctx: &Ctx, spec: Option<&str>) -> CmdResult<(String, String)> {
    let ps = ctx.pool_spec(spec)?;
    if ps.namespace.is_empty() {
        return Err(CmdError::new(
            Errno::EINVAL,
            "namespace name was not specified",
        ));
    }
    Ok((ps.pool, ps.namespace))
}

/// `rbd namespace create`.
pub async fn namespace_create(ctx: &Ctx, spec: Option<&str>) -> CmdResult {
    let (pool, ns) = ns_target(ctx, spec)?;
    let io = ctx.ioctx_unchecked(&pool, &ns).await?;
    ctx.rbd.namespace_create(&io).await.map_err(|e| {
        CmdError::new(e.errno(), e.to_string())
            .then(format!("failed to create namespace: {}", e.errno()))
    })
}

/// `rbd namespace rm`.
pub async fn namespace_rm(ctx: &Ctx, spec: Option<&str>) -> CmdResult {
    let (pool, ns) = ns_target(ctx, spec)?;
    let io = ctx.ioctx_unchecked(&pool, &ns).await?;
    ctx.rbd.namespace_remove(&io).await.map_err(|e| {
        CmdError::new(e.errno(), e.to_string())
            .then(format!("failed to remove namespace: {}", e.errno()))
    })
}

/// `rbd namespace ls [POOL]`.
pub async fn namespace_ls(ctx: &Ctx, pool: Option<&str>) -> CmdResult {
    let ps = ctx.pool_spec(pool)?;
    let io = ctx.ioctx(&ps.pool, "").await?;
    let names = ctx
        .rbd
        .namespace_list(&io)
        .await
        .map_err(|e| CmdError::rbd("error listing namespaces", &e))?;
    if ctx.g.json() {
        let v: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    if names.is_empty() {
        return Ok(());
    }
    let mut t = Table::new(&[("NAME", Align::Left)]);
    for n in names {
        t.row(vec![n]);
    }
    print!("{}", t.render());
    Ok(())
}

/// Where `rbd config` acts.
pub enum ConfTarget {
    /// `rbd config pool ... POOL`.
    Pool(String),
    /// `rbd config image ... IMAGE`.
    Image(String),
}

/// A checked librbd option name (only `rbd_*` options can be overridden
/// per pool or image, as librbd).
fn conf_key(key: &str) -> CmdResult<String> {
    let name = normalize_name(key);
    match find_option(&name) {
        Some(def) if def.name.starts_with("rbd_") => Ok(def.name.to_string()),
        _ => Err(CmdError::new(
            Errno::EINVAL,
            format!("invalid config key: {key}"),
        )),
    }
}

/// The store behind a config target: pool metadata or image metadata.
enum Store {
    Pool(quarry_rbd::IoCtx),
    Image(quarry_rbd::Image),
}

impl Store {
    async fn open(ctx: &Ctx, t: &ConfTarget) -> CmdResult<Store> {
        Ok(match t {
            ConfTarget::Pool(p) => {
                let ps = ctx.pool_spec(Some(p))?;
                Store::Pool(ctx.ioctx(&ps.pool, &ps.namespace).await?)
            }
            ConfTarget::Image(i) => Store::Image(ctx.open(&head_spec(ctx, i)?, false).await?),
        })
    }

    async fn get(&self, ctx: &Ctx, key: &str) -> Result<bytes::Bytes, quarry_rbd::RbdError> {
        match self {
            Store::Pool(io) => ctx.rbd.pool_metadata_get(io, key).await,
            Store::Image(img) => img.metadata_get(key).await,
        }
    }

    async fn set(&self, ctx: &Ctx, key: &str, v: &str) -> Result<(), quarry_rbd::RbdError> {
        match self {
            Store::Pool(io) => {
                ctx.rbd
                    .pool_metadata_set(io, key, v.as_bytes().to_vec())
                    .await
            }
            Store::Image(img) => img.metadata_set(key, v.as_bytes().to_vec()).await,
        }
    }

    async fn remove(&self, ctx: &Ctx, key: &str) -> Result<(), quarry_rbd::RbdError> {
        match self {
            Store::Pool(io) => ctx.rbd.pool_metadata_remove(io, key).await,
            Store::Image(img) => img.metadata_remove(key).await,
        }
    }

    /// The `conf_*` overrides stored here, option name → value.
    async fn overrides(&self, ctx: &Ctx) -> Result<Vec<(String, String)>, quarry_rbd::RbdError> {
        let m = match self {
            Store::Pool(io) => ctx.rbd.pool_metadata_list(io).await?,
            Store::Image(img) => img.metadata_list("", 0).await?,
        };
        Ok(m.into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(CONF_PREFIX)
                    .map(|k| (k.to_string(), String::from_utf8_lossy(&v).into_owned()))
            })
            .collect())
    }
}

/// `rbd config pool|image get`.
pub async fn config_get(ctx: &Ctx, t: &ConfTarget, key: &str) -> CmdResult {
    let name = conf_key(key)?;
    let store = Store::open(ctx, t).await?;
    match store.get(ctx, &format!("{CONF_PREFIX}{name}")).await {
        Ok(v) => {
            println!("{}", String::from_utf8_lossy(&v));
            Ok(())
        }
        Err(e) if e.errno() == Errno::ENOENT => {
            Err(CmdError::new(Errno::ENOENT, format!("{name} is not set")))
        }
        Err(e) => Err(CmdError::rbd("failed to get config", &e)),
    }
}

/// `rbd config pool|image set`: the value is validated against the option's
/// type and stored in its canonical form.
pub async fn config_set(ctx: &Ctx, t: &ConfTarget, key: &str, value: &str) -> CmdResult {
    let name = conf_key(key)?;
    let def = find_option(&name)
        .ok_or_else(|| CmdError::new(Errno::EINVAL, format!("invalid config key: {key}")))?;
    if let Err(why) = canonicalize(def, value) {
        return Err(CmdError::new(
            Errno::EINVAL,
            format!("invalid config value '{value}' for {name}: {why}"),
        ));
    }
    let store = Store::open(ctx, t).await?;
    store
        .set(ctx, &format!("{CONF_PREFIX}{name}"), value)
        .await
        .map_err(|e| CmdError::rbd("failed to set config", &e))
}

/// `rbd config pool|image rm`.
pub async fn config_rm(ctx: &Ctx, t: &ConfTarget, key: &str) -> CmdResult {
    let name = conf_key(key)?;
    let store = Store::open(ctx, t).await?;
    match store.remove(ctx, &format!("{CONF_PREFIX}{name}")).await {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Errno::ENOENT => {
            Err(CmdError::new(Errno::ENOENT, format!("{name} is not set")))
        }
        Err(e) => Err(CmdError::rbd("failed to remove config", &e)),
    }
}

/// `rbd config pool|image list`: every `rbd_*` option with the value an
/// image opened by this client would use and where it comes from
/// (`config` = this client's configuration, `pool`, `image`).
pub async fn config_list(ctx: &Ctx, t: &ConfTarget) -> CmdResult {
    let store = Store::open(ctx, t).await?;
    let mut layers: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    if let ConfTarget::Image(i) = t {
        // An image sees its pool's overrides below its own.
        let spec = head_spec(ctx, i)?;
        let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
        layers.push((
            "pool",
            Store::Pool(io).overrides(ctx).await.unwrap_or_default(),
        ));
    }
    let own = store
        .overrides(ctx)
        .await
        .map_err(|e| CmdError::rbd("failed to list config", &e))?;
    layers.push((
        match t {
            ConfTarget::Pool(_) => "pool",
            ConfTarget::Image(_) => "image",
        },
        own,
    ));
    let conf = &ctx.conn.config;
    let mut rows = Vec::new();
    for def in all_options() {
        if !def.name.starts_with("rbd_") {
            continue;
        }
        let mut value = conf.get(def.name).unwrap_or_default();
        let mut source = "config";
        for (src, list) in &layers {
            if let Some((_, v)) = list.iter().find(|(k, _)| k == def.name) {
                // Shown as the library applies it: canonical form, bad values ignored.
                if let Ok(c) = canonicalize(def, v) {
                    value = c;
                    source = src;
                }
            }
        }
        rows.push((def.name, value, source));
    }
    rows.sort_by(|a, b| a.0.cmp(b.0));
    if ctx.g.json() {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, v, s)| json!({"name": n, "value": v, "source": s}))
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    let mut tab = Table::new(&[
        ("Name", Align::Left),
        ("Value", Align::Left),
        ("Source", Align::Left),
    ]);
    for (n, v, s) in rows {
        tab.row(vec![n.to_string(), v, s.to_string()]);
    }
    print!("{}", tab.render());
    Ok(())
}

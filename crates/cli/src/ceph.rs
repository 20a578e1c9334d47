//! `quarry ceph …` (and `ceph …` through a symlink): the cluster
//! administration commands an operator's scripts use, with Ceph's output
//! forms (`Error ENOENT: …` on stderr, exit code = errno).
//!
//! Against a cluster, commands go to the monitors through the connection's
//! `MonClient`; against the embedded backend (no monitors) the pool
//! commands use the object layer directly and the rest report EOPNOTSUPP.
//! `config set|get|rm|dump|show` work on the monitors' config database.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use quarry_common::entity::EntityName;
use quarry_common::options::{find_option, mondb, Config, Level};
use quarry_common::size::format_size;
use quarry_common::Errno;
use quarry_map::ClusterMap;
use quarry_monc::report::{self, health_json, pg_state, pg_states};
use quarry_monc::{AppOp, ConfigEntry, MonClient, MonCommand, MonReply, PoolApplications};
use quarry_rados::PoolId;
use serde_json::{json, Value};

use crate::rbd::{connect_with, Align, CmdError, CmdResult, Table};

/// Output format (`-f/--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CephFormat {
    /// Human-readable.
    Plain,
    /// Compact JSON.
    Json,
    /// Indented JSON.
    JsonPretty,
}

/// `ceph` and its subcommands.
#[derive(Args, Debug)]
#[command(about = "Administer the cluster (Ceph's ceph syntax)")]
pub struct CephArgs {
    /// Show cluster status (same as `ceph status`).
    #[arg(short = 's')]
    status: bool,
    /// Ceph configuration file.
    #[arg(short = 'c', long = "conf", global = true)]
    conf: Option<String>,
    /// Client id (without `client.`).
    #[arg(long, visible_alias = "user", global = true)]
    id: Option<String>,
    /// Client name (`client.NAME`).
    #[arg(
        short = 'n',
        long = "name",
        id = "entity_name",
        value_name = "NAME",
        global = true
    )]
    name: Option<String>,
    /// Keyring path.
    #[arg(short = 'k', long, global = true)]
    keyring: Option<String>,
    /// Monitor address(es).
    #[arg(short = 'm', long = "mon-host", global = true)]
    mon_host: Option<String>,
    /// Cluster name.
    #[arg(long, global = true)]
    cluster: Option<String>,
    /// Output format.
    #[arg(short = 'f', long, value_enum, global = true)]
    format: Option<CephFormat>,
    #[command(subcommand)]
    cmd: Option<CephCmd>,
}

#[derive(Subcommand, Debug)]
enum CephCmd {
    /// Cluster status summary.
    Status,
    /// The cluster's fsid.
    Fsid,
    /// Cluster health (`detail` for one line per check).
    Health {
        /// `detail`.
        detail: Option<String>,
    },
    /// Space usage per pool.
    Df {
        /// `detail`.
        detail: Option<String>,
    },
    /// OSD commands.
    Osd {
        #[command(subcommand)]
        cmd: OsdCmd,
    },
    /// Authentication database.
    Auth {
        #[command(subcommand)]
        cmd: AuthCmd,
    },
    /// Monitor commands.
    Mon {
        #[command(subcommand)]
        cmd: MonCmd,
    },
    /// Configuration options and the monitors' config database.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Placement group commands.
    Pg {
        #[command(subcommand)]
        cmd: PgCmd,
    },
}

/// `ceph pg ...`.
#[derive(Subcommand, Debug)]
enum PgCmd {
    /// Deep-scrub a PG: compare every object's copies, data checksums
    /// included (waits for the result; Ceph only queues it).
    DeepScrub {
        /// PG id (`<pool id>.<hex seed>`, as `ceph osd map` prints it).
        pgid: String,
    },
    /// Scrub a PG (here always a deep scrub).
    Scrub {
        /// PG id.
        pgid: String,
    },
    /// Deep-scrub a PG and rewrite damaged or differing copies from the
    /// authoritative one.
    Repair {
        /// PG id.
        pgid: String,
    },
    /// List PGs: `ls [POOL_ID] [STATE...]` (states: active, clean,
    /// undersized, inconsistent, unknown; a PG must have all of them).
    Ls {
        /// An optional pool id, then states.
        args: Vec<String>,
    },
    /// List one pool's PGs: `ls-by-pool POOL [STATE...]`.
    LsByPool {
        /// Pool name.
        pool: String,
        /// States.
        states: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
#[command(disable_help_subcommand = true)]
enum ConfigCmd {
    /// Describe an option (type, default, runtime-updatable).
    Help {
        /// Option name.
        option: String,
    },
    /// Show the monitor database values an entity or type sees, or one
    /// option's value for it (its default when not set).
    Get {
        /// Who (`global`, `client`, `osd`, `osd.0`, `client.glance`).
        who: String,
        /// Option name.
        option: Option<String>,
    },
    /// Store an option in the monitor config database.
    Set {
        /// Section: `global`, a type (`osd`, `client`) or an entity (`osd.0`).
        who: String,
        /// Option name.
        option: String,
        /// Value.
        value: String,
    },
    /// Remove an option from the monitor config database.
    #[command(visible_alias = "remove")]
    Rm {
        /// Section.
        who: String,
        /// Option name.
        option: String,
    },
    /// Every value of the monitor config database.
    Dump,
    /// The effective configuration of an entity (defaults, the monitor
    /// database and the cluster's conf file): the values not at their default.
    Show {
        /// Who (`osd.0`, `client.admin`, `mon.a`).
        who: String,
    },
    /// Store a conf file's options in the monitor database; prints what
    /// could not be stored (as a conf file) on stdout or to `-o`.
    AssimilateConf {
        /// Conf file to read.
        #[arg(short = 'i')]
        input: String,
        /// Write the leftovers here instead of stdout.
        #[arg(short = 'o')]
        output: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum OsdCmd {
    /// OSDs by host.
    Tree,
    /// OSD ids.
    Ls,
    /// Summary of OSD states.
    Stat,
    /// The OSD map: epoch, flags, full ratios, pools and OSDs.
    Dump,
    /// Space and PGs per OSD, from their latest filesystem reports.
    Df,
    /// Where an object lives: its PG and that PG's OSDs, primary first.
    Map {
        /// Pool name.
        pool: String,
        /// Object name.
        object: String,
        /// Namespace (default: none).
        nspace: Option<String>,
    },
    /// Mark OSDs down.
    Down {
        /// OSD ids (`0` or `osd.0`).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Mark OSDs out.
    Out {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set an OSD flag: `noout` (no OSD is marked out while it is set:
    /// maintenance), `nodown` (none is marked down), `noin` (a booting OSD
    /// is not marked in).
    Set {
        /// The flag.
        flag: String,
    },
    /// Clear an OSD flag.
    Unset {
        /// The flag.
        flag: String,
    },
    /// Set the full ratio: an OSD whose filesystem is fuller takes no
    /// more writes that need space (default 0.95).
    SetFullRatio {
        /// A ratio in (0, 1].
        ratio: String,
    },
    /// Set the nearfull ratio: HEALTH_WARN above it (default 0.85).
    SetNearfullRatio {
        /// A ratio in (0, 1].
        ratio: String,
    },
    /// Mark OSDs in.
    In {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Ceph's 0-1 override weight: not supported (refused with what to
    /// use instead).
    Reweight {
        /// OSD id.
        osd: String,
        /// Override weight.
        weight: String,
    },
    /// Placement weights.
    Crush {
        #[command(subcommand)]
        cmd: CrushCmd,
    },
    /// Remove down OSDs from the map (they keep their keys: one that
    /// boots again comes back, with weight 1).
    Rm {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Whether stopping these OSDs leaves every PG active (at least
    /// `min_size` members up); `EBUSY` if not.
    OkToStop {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Whether these OSDs hold nothing the cluster still needs: no PG maps
    /// to them and every PG is clean; `EBUSY` if not.
    SafeToDestroy {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Declare a down OSD's data gone for good: PGs that wait for it go on
    /// with the newest copies the others hold (writes only it had are lost).
    Lost {
        /// OSD id.
        osd: String,
        /// Confirm.
        #[arg(long = "yes-i-really-mean-it")]
        yes: bool,
    },
    /// Remove a down OSD from the map and delete its key (`osd.N`).
    Purge {
        /// OSD id (not `id`: that is the global `--id`).
        osd: String,
        /// Confirm.
        #[arg(long = "yes-i-really-mean-it")]
        yes: bool,
        /// Accepted, as Ceph's (the OSD must still be down).
        #[arg(long)]
        force: bool,
    },
    /// Pools.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Fenced client addresses (`blacklist` is the old spelling).
    #[command(visible_alias = "blacklist")]
    Blocklist {
        #[command(subcommand)]
        cmd: BlocklistCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CrushCmd {
    /// Set an OSD's placement weight (Ceph's convention: its capacity in
    /// TiB; 0 drains it). Placement moves data only to or from it.
    Reweight {
        /// `osd.N`.
        name: String,
        /// Weight, 0 to 65535.
        weight: String,
    },
}

#[derive(Subcommand, Debug)]
enum BlocklistCmd {
    /// Fence a client address (`ip[:port][/nonce]`) for EXPIRE seconds (default 3600).
    Add {
        /// Client address, e.g. `127.0.0.1:0/4123` (`rbd lock ls` shows it).
        addr: String,
        /// Seconds until the entry expires.
        expire: Option<f64>,
    },
    /// Lift a fence.
    Rm {
        /// Client address.
        addr: String,
    },
    /// List the fenced addresses and their expiry.
    Ls,
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Create a pool.
    Create {
        /// Pool name.
        name: String,
        /// Placement groups.
        pg_num: Option<u32>,
        /// Accepted for compatibility (equals pg_num).
        pgp_num: Option<u32>,
        /// `replicated` (the only kind).
        kind: Option<String>,
        /// Replicas.
        #[arg(long)]
        size: Option<u32>,
    },
    /// List pools.
    Ls {
        /// `detail`.
        detail: Option<String>,
    },
    /// Delete a pool: `rm NAME NAME --yes-i-really-really-mean-it`.
    #[command(visible_alias = "delete")]
    Rm {
        /// Pool name.
        name: String,
        /// Pool name again.
        name2: Option<String>,
        /// Confirm.
        #[arg(long = "yes-i-really-really-mean-it")]
        yes: bool,
    },
    /// Get a pool variable (size, min_size, pg_num, all).
    Get {
        /// Pool name.
        name: String,
        /// Variable.
        var: String,
    },
    /// Set a pool variable (size, min_size, pg_num).
    Set {
        /// Pool name.
        name: String,
        /// Variable.
        var: String,
        /// Value.
        val: String,
    },
    /// Set a quota: `set-quota NAME max_objects|max_bytes N` (0 removes it).
    SetQuota {
        /// Pool name.
        name: String,
        /// `max_objects` or `max_bytes`.
        field: String,
        /// The limit (`max_bytes` takes sizes: `10G`). A negative one is
        /// refused by the parser, not taken for an option.
        #[arg(allow_hyphen_values = true)]
        val: String,
    },
    /// Show a pool's quotas and its usage.
    GetQuota {
        /// Pool name.
        name: String,
    },
    /// Rename a pool: `rename OLD NEW`.
    Rename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// A pool's applications and their keys:
    /// `application enable|disable|get|set|rm`.
    Application {
        #[command(subcommand)]
        cmd: AppCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AppCmd {
    /// Enable an application on a pool (`rbd`).
    Enable {
        /// Pool name.
        pool: String,
        /// Application.
        app: String,
        /// Enable it beside another application already enabled.
        #[arg(long = "yes-i-really-mean-it")]
        yes: bool,
    },
    /// Disable an application on a pool, with its keys.
    Disable {
        /// Pool name.
        pool: String,
        /// Application.
        app: String,
        /// Confirm.
        #[arg(long = "yes-i-really-mean-it")]
        yes: bool,
    },
    /// Show a pool's applications (JSON), one application's keys, or one
    /// key's value.
    Get {
        /// Pool name (all pools when absent).
        pool: Option<String>,
        /// One application: its keys.
        app: Option<String>,
        /// One key: its value.
        key: Option<String>,
    },
    /// Set a key of an application enabled on a pool.
    Set {
        /// Pool name.
        pool: String,
        /// Application.
        app: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Remove a key of an application enabled on a pool.
    Rm {
        /// Pool name.
        pool: String,
        /// Application.
        app: String,
        /// Key.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuthCmd {
    /// Get an entity's key, creating it with the given caps if absent.
    GetOrCreate {
        /// Entity (`client.glance`).
        entity: String,
        /// Caps: `SERVICE CAPS` pairs (`mon 'allow r' osd 'allow rwx pool=data'`).
        caps: Vec<String>,
    },
    /// Show an entity's keyring section.
    Get {
        /// Entity.
        entity: String,
    },
    /// List every entity.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete an entity.
    #[command(visible_alias = "rm")]
    Del {
        /// Entity.
        entity: String,
    },
    /// Replace an entity's caps.
    Caps {
        /// Entity.
        entity: String,
        /// `SERVICE CAPS` pairs.
        caps: Vec<String>,
    },
    /// Print only the key.
    PrintKey {
        /// Entity.
        entity: String,
    },
}

#[derive(Subcommand, Debug)]
enum MonCmd {
    /// Monitor summary.
    Stat,
}

fn cerr(errno: Errno, msg: impl Into<String>) -> CmdError {
    CmdError::new(errno, format!("Error {errno:?}: {}", msg.into()))
}

fn mon_err(e: quarry_monc::MonClientError) -> CmdError {
    cerr(e.errno(), e.to_string())
}

struct Ctx {
    /// What the command line asked for (to read the same conf file again).
    req: quarry_connect::ConfigRequest,
    monc: Option<Arc<MonClient>>,
    /// The cluster client, for requests to OSDs (`None` when embedded).
    cluster: Option<Arc<quarry_client::ClusterClient>>,
    rados: Arc<dyn quarry_rados::Rados>,
    format: CephFormat,
}

impl Ctx {
    fn json(&self) -> bool {
        self.format != CephFormat::Plain
    }

    fn print_json(&self, v: &Value) {
        crate::rbd::print_json(v, self.format == CephFormat::JsonPretty);
    }

    fn monc(&self, what: &str) -> CmdResult<&Arc<MonClient>> {
        self.monc.as_ref().ok_or_else(|| {
            cerr(
                Errno::EOPNOTSUPP,
                format!("'{what}' needs a cluster (the embedded backend has no monitors)"),
            )
        })
    }

    async fn command(&self, what: &str, cmd: MonCommand) -> CmdResult<MonReply> {
        self.monc(what)?.command(cmd).await.map_err(mon_err)
    }

    async fn map(&self, what: &str) -> CmdResult<Arc<ClusterMap>> {
        self.monc(what)?.refresh_map().await.map_err(mon_err)
    }
}

/// Run `ceph`; returns the process exit code.
pub fn run(a: CephArgs) -> i32 {
    let Some(rt) = crate::tools::runtime("ceph") else {
        return 1;
    };
    match rt.block_on(dispatch(a)) {
        Ok(()) => 0,
        Err(e) => {
            for l in &e.lines {
                eprintln!("{l}");
            }
            e.code
        }
    }
}

async fn dispatch(a: CephArgs) -> CmdResult {
    let g = crate::rbd::Global {
        conf: a.conf.clone(),
        id: a.id.clone(),
        name: a.name.clone(),
        keyring: a.keyring.clone(),
        mon_host: a.mon_host.clone(),
        cluster: a.cluster.clone(),
        ..Default::default()
    };
    let req = g.config_request()?;
    let conn = connect_with(&req, "ceph").await.map_err(|mut e| {
        // Ceph's tool words a failed connection this way.
        e.lines = e.lines.into_iter().map(|l| format!("ceph: {l}")).collect();
        e
    })?;
    let ctx = Ctx {
        req,
        monc: conn.monc.clone(),
        cluster: conn.cluster.clone(),
        rados: Arc::clone(&conn.rados),
        format: a.format.unwrap_or(CephFormat::Plain),
    };
    let cmd = match (a.status, a.cmd) {
        (true, _) | (false, None) => CephCmd::Status,
        (false, Some(c)) => c,
    };
    match cmd {
        CephCmd::Status => status(&ctx).await,
        CephCmd::Fsid => {
            let map = ctx.map("fsid").await?;
            if ctx.json() {
                ctx.print_json(&json!({ "fsid": map.fsid }));
            } else {
                println!("{}", map.fsid);
            }
            Ok(())
        }
        CephCmd::Health { detail } => health(&ctx, detail.as_deref() == Some("detail")).await,
        CephCmd::Df { detail } => match detail.as_deref() {
            None => df(&ctx, false).await,
            Some("detail") => df(&ctx, true).await,
            Some(other) => Err(cerr(
                Errno::EINVAL,
                format!("invalid argument '{other}' (ceph df [detail])"),
            )),
        },
        CephCmd::Osd { cmd } => match cmd {
            OsdCmd::Tree => osd_tree(&ctx).await,
            OsdCmd::Ls => osd_ls(&ctx).await,
            OsdCmd::Stat => osd_stat(&ctx).await,
            OsdCmd::Dump => osd_dump(&ctx).await,
            OsdCmd::Df => osd_df(&ctx).await,
            OsdCmd::Map {
                pool,
                object,
                nspace,
            } => osd_map(&ctx, &pool, &object, nspace.as_deref().unwrap_or("")).await,
            OsdCmd::Down { ids } => osd_mark(&ctx, "down", &ids).await,
            OsdCmd::Out { ids } => osd_mark(&ctx, "out", &ids).await,
            OsdCmd::In { ids } => osd_mark(&ctx, "in", &ids).await,
            OsdCmd::Crush {
                cmd: CrushCmd::Reweight { name, weight },
            } => crush_reweight(&ctx, &name, &weight).await,
            OsdCmd::Rm { ids } => osd_remove(&ctx, &ids, false).await,
            OsdCmd::Lost { osd, yes } => osd_lost(&ctx, &osd, yes).await,
            OsdCmd::Reweight { osd, weight: _ } => Err(cerr(
                Errno::EOPNOTSUPP,
                format!("osd reweight (the 0-1 override) is not supported: set the placement weight with `ceph osd crush reweight osd.{} W`, or take the OSD out with `ceph osd out`", osd.strip_prefix("osd.").unwrap_or(&osd)),
            )),
            OsdCmd::OkToStop { ids } => osd_ok_to_stop(&ctx, &ids).await,
            OsdCmd::SafeToDestroy { ids } => osd_safe_to_destroy(&ctx, &ids).await,
            OsdCmd::Purge { osd, yes, force: _ } => {
                if yes {
                    osd_remove(&ctx, std::slice::from_ref(&osd), true).await
                } else {
                    Err(cerr(
                        Errno::EPERM,
                        "Are you SURE? Purging deletes the OSD's key and its place in the map for good. Pass --yes-i-really-mean-it if you really do.",
                    ))
                }
            }
            OsdCmd::Set { flag } => osd_flag(&ctx, &flag, true).await,
            OsdCmd::Unset { flag } => osd_flag(&ctx, &flag, false).await,
            OsdCmd::SetFullRatio { ratio } => set_full_ratio(&ctx, &ratio, true).await,
            OsdCmd::SetNearfullRatio { ratio } => set_full_ratio(&ctx, &ratio, false).await,
            OsdCmd::Pool { cmd } => match cmd {
                PoolCmd::Create {
                    name,
                    pg_num,
                    pgp_num: _,
                    kind,
                    size,
                } => pool_create(&ctx, &name, pg_num, kind.as_deref(), size).await,
                PoolCmd::Ls { detail } => pool_ls(&ctx, detail.as_deref() == Some("detail")).await,
                PoolCmd::Rm { name, name2, yes } => {
                    pool_rm(&ctx, &name, name2.as_deref(), yes).await
                }
                PoolCmd::Get { name, var } => pool_get(&ctx, &name, &var).await,
                PoolCmd::Set { name, var, val } => pool_set(&ctx, &name, &var, &val).await,
                PoolCmd::SetQuota { name, field, val } => {
                    pool_set_quota(&ctx, &name, &field, &val).await
                }
                PoolCmd::GetQuota { name } => pool_get_quota(&ctx, &name).await,
                PoolCmd::Rename { from, to } => pool_rename(&ctx, &from, &to).await,
                PoolCmd::Application { cmd } => pool_application(&ctx, cmd).await,
            },
            OsdCmd::Blocklist { cmd } => blocklist(&ctx, cmd).await,
        },
        CephCmd::Auth { cmd } => auth(&ctx, cmd).await,
        CephCmd::Mon { cmd: MonCmd::Stat } => mon_stat(&ctx).await,
        CephCmd::Config { cmd } => config(&ctx, cmd).await,
        CephCmd::Pg { cmd } => match cmd {
            PgCmd::DeepScrub { pgid } | PgCmd::Scrub { pgid } => pg_scrub(&ctx, &pgid, false).await,
            PgCmd::Repair { pgid } => pg_scrub(&ctx, &pgid, true).await,
            PgCmd::Ls { args } => {
                let (pool, states) = match args.split_first() {
                    Some((p, rest)) if p.parse::<i64>().is_ok() => (Some(p.as_str()), rest),
                    _ => (None, &args[..]),
                };
                pg_ls(&ctx, pool, states).await
            }
            PgCmd::LsByPool { pool, states } => pg_ls(&ctx, Some(&pool), &states).await,
        },
    }
}

/// A PG id as Ceph writes it: `<pool id>.<seed in hex>`.
pub(crate) fn parse_pgid(s: &str) -> Option<quarry_map::PgId> {
    let (pool, seed) = s.trim().split_once('.')?;
    if pool.is_empty() || seed.is_empty() || seed.starts_with('+') || pool.starts_with('+') {
        return None;
    }
    Some(quarry_map::PgId {
        pool: pool.parse().ok()?,
        seed: u32::from_str_radix(seed, 16).ok()?,
    })
}

/// `ceph pg deep-scrub|scrub|repair <pgid>`: run it on the PG's primary
/// and print what it found.
async fn pg_scrub(ctx: &Ctx, pgid: &str, repair: bool) -> CmdResult {
    let what = if repair { "repair" } else { "deep-scrub" };
    let pg =
        parse_pgid(pgid).ok_or_else(|| cerr(Errno::EINVAL, format!("invalid pgid '{pgid}'")))?;
    let map = ctx.map(&format!("pg {what}")).await?;
    let exists = map.pools.get(&pg.pool).is_some_and(|p| pg.seed < p.pg_num);
    if !exists {
        return Err(cerr(Errno::ENOENT, format!("i don't have pgid {pgid}")));
    }
    let cluster = ctx.cluster.as_ref().ok_or_else(|| {
        cerr(
            Errno::EOPNOTSUPP,
            format!("'pg {what}' needs a cluster (the embedded backend has no OSDs)"),
        )
    })?;
    let primary = map.pg_primary(pg).ok().flatten();
    if !ctx.json() {
        match primary {
            Some(p) => println!("instructing pg {pg} on osd.{p} to {what}"),
            None => println!("instructing pg {pg} to {what}"),
        }
    }
    let r = cluster
        .scrub_pg(pg, repair)
        .await
        .map_err(|e| cerr(e.errno, format!("pg {pg} {what}: {}", e.context)))?;
    if ctx.json() {
        ctx.print_json(&json!({
            "pgid": pg.to_string(), "repair": repair, "acting": r.acting,
            "objects": r.objects, "repaired": r.repaired,
            "inconsistents": r.inconsistent.iter().map(|o| json!({
                "namespace": o.namespace, "name": o.name, "errors": o.errors,
                "selected_object_info_osd": o.auth, "bad_copies": o.bad_copies,
                "repaired": o.repaired,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let acting = r
        .acting
        .iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut line = format!(
        "pg {pg} {what} done on [{acting}]: {} objects, {} inconsistent",
        r.objects,
        r.inconsistent.len()
    );
    if repair {
        line.push_str(&format!(", {} copies repaired", r.repaired));
    }
    println!("{line}");
    for o in &r.inconsistent {
        let ns = if o.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", o.namespace)
        };
        for e in &o.errors {
            println!("    {ns}{}: {e}", o.name);
        }
    }
    Ok(())
}

/// A registered option, or Ceph's error for an unknown name.
fn known_option(name: &str) -> CmdResult<&'static quarry_common::options::OptionDef> {
    quarry_common::options::find_option(name).ok_or_else(|| {
        cerr(
            Errno::EINVAL,
            format!("unrecognized config option '{name}'"),
        )
    })
}

fn mondb_err(e: mondb::MonDbError) -> CmdError {
    cerr(e.errno(), e.to_string())
}

/// `ceph config ...`: `help` from the option registry; the rest on the
/// monitors' config database (validated here and again by the monitor).
async fn config(ctx: &Ctx, cmd: ConfigCmd) -> CmdResult {
    match cmd {
        ConfigCmd::Help { option } => {
            let d = known_option(&option)?;
            if ctx.json() {
                let o = json!({"name": d.name, "type": d.ty.as_str(),
                    "desc": d.description, "default": d.default,
                    "can_update_at_runtime": d.runtime,
                    "enum_values": d.enum_values});
                ctx.print_json(&o);
            } else {
                println!("{} - {}", d.name, d.description);
                println!("  ({})", d.ty.as_str());
                println!("  Default: {}", d.default);
                if !d.enum_values.is_empty() {
                    println!("  Possible values:  {}", d.enum_values.join(" "));
                }
                println!("  Can update at runtime: {}", d.runtime);
            }
            Ok(())
        }
        ConfigCmd::Set { who, option, value } => {
            mondb::parse_target(&who).map_err(mondb_err)?;
            mondb::check_set(&option, &value).map_err(mondb_err)?;
            ctx.command(
                "config set",
                MonCommand::ConfigSet {
                    who,
                    name: option,
                    value,
                },
            )
            .await?;
            Ok(())
        }
        ConfigCmd::Rm { who, option } => {
            mondb::parse_target(&who).map_err(mondb_err)?;
            mondb::check_name(&option).map_err(mondb_err)?;
            ctx.command("config rm", MonCommand::ConfigRm { who, name: option })
                .await?;
            Ok(())
        }
        ConfigCmd::Get { who, option } => config_get(ctx, &who, option.as_deref()).await,
        ConfigCmd::Dump => {
            let entries = config_entries(ctx, "config dump", MonCommand::ConfigDump).await?;
            print_entries(ctx, &entries, true);
            Ok(())
        }
        ConfigCmd::Show { who } => config_show(ctx, &who).await,
        ConfigCmd::AssimilateConf { input, output } => {
            assimilate_conf(ctx, &input, output.as_deref()).await
        }
    }
}

async fn config_entries(ctx: &Ctx, what: &str, cmd: MonCommand) -> CmdResult<Vec<ConfigEntry>> {
    match ctx.command(what, cmd).await? {
        MonReply::Config(v) => Ok(v),
        other => Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    }
}

/// `config dump` / `config get WHO`: Ceph's columns (without LEVEL, which
/// Quarry's registry does not record); `dump` JSON is a list, `get` JSON
/// an object keyed by option name.
fn print_entries(ctx: &Ctx, entries: &[ConfigEntry], as_list: bool) {
    let ro = |name: &str| find_option(name).is_some_and(|d| !d.runtime);
    if ctx.json() {
        let item = |e: &ConfigEntry| {
            json!({"section": e.section, "name": e.name, "value": e.value,
                "mask": "", "can_update_at_runtime": !ro(&e.name)})
        };
        let v = if as_list {
            Value::Array(entries.iter().map(item).collect())
        } else {
            Value::Object(entries.iter().map(|e| (e.name.clone(), item(e))).collect())
        };
        ctx.print_json(&v);
        return;
    }
    let mut t = Table::new(&[
        ("WHO", Align::Left),
        ("MASK", Align::Left),
        ("OPTION", Align::Left),
        ("VALUE", Align::Left),
        ("RO", Align::Left),
    ]);
    for e in entries {
        t.row(vec![
            e.section.clone(),
            String::new(),
            e.name.clone(),
            e.value.clone(),
            if ro(&e.name) { "*" } else { "" }.to_string(),
        ]);
    }
    print!("{}", t.render());
}

async fn config_get(ctx: &Ctx, who: &str, option: Option<&str>) -> CmdResult {
    mondb::sections_for(who).map_err(mondb_err)?;
    let entries = config_entries(
        ctx,
        "config get",
        MonCommand::ConfigGet {
            who: who.to_string(),
        },
    )
    .await?;
    let Some(option) = option else {
        print_entries(ctx, &entries, false);
        return Ok(());
    };
    let def = find_option(option)
        .ok_or_else(|| cerr(Errno::ENOENT, format!("unrecognized key '{option}'")))?;
    let name = if def.name == "debug_*" {
        quarry_common::options::normalize_name(option)
    } else {
        def.name.to_string()
    };
    let value = entries
        .iter()
        .find(|e| e.name == name)
        .map_or(def.default, |e| e.value.as_str());
    if ctx.json() {
        ctx.print_json(&json!(value));
    } else {
        println!("{value}");
    }
    Ok(())
}

/// `config show WHO`: what that entity's configuration is, computed as it
/// computes it: defaults < the monitor database < the cluster's conf file
/// (the one this command read; `quarry up` daemons read the same file).
async fn config_show(ctx: &Ctx, who: &str) -> CmdResult {
    let entity = EntityName::parse(who)
        .map_err(|_| cerr(Errno::EINVAL, format!("unrecognized entity '{who}'")))?;
    if entity.entity_type() == quarry_common::entity::EntityType::Osd {
        let map = ctx.map("config show").await?;
        let known = entity
            .id()
            .parse::<u32>()
            .is_ok_and(|id| map.osds.contains_key(&id));
        if !known {
            return Err(cerr(Errno::ENOENT, format!("no config state for {who}")));
        }
    }
    let entries = config_entries(
        ctx,
        "config show",
        MonCommand::ConfigGet {
            who: who.to_string(),
        },
    )
    .await?;
    let mut cfg = match &ctx.req.cluster {
        Some(c) => Config::with_cluster(entity, c),
        None => Config::new(entity),
    };
    let env_conf = std::env::var("CEPH_CONF").ok();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    match cfg.read_conf_file(
        ctx.req.conf.as_deref(),
        env_conf.as_deref(),
        home.as_deref(),
    ) {
        Ok(_) | Err(quarry_common::conf::ConfError::NoConfFile { .. }) => {}
        Err(e) => return Err(cerr(e.errno(), e.to_string())),
    }
    for e in &entries {
        // A value this build refuses stays at its default, as in a daemon.
        let _ = cfg.set(&e.name, &e.value, Level::Mon);
    }
    let shown = cfg.diff();
    if ctx.json() {
        let v: Vec<Value> = shown
            .iter()
            .map(|o| json!({"name": o.name, "value": o.value, "source": o.source.as_str()}))
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("VALUE", Align::Left),
        ("SOURCE", Align::Left),
    ]);
    for o in &shown {
        t.row(vec![
            o.name.clone(),
            o.value.clone(),
            o.source.as_str().to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `config assimilate-conf -i FILE`: every option of every section that
/// the database can hold is stored; the rest is printed back as a conf file.
async fn assimilate_conf(ctx: &Ctx, input: &str, output: Option<&str>) -> CmdResult {
    let conf = quarry_common::conf::ConfFile::load(std::path::Path::new(input))
        .map_err(|e| cerr(e.errno(), e.to_string()))?;
    let mut leftover = String::new();
    for section in conf.sections() {
        let target = mondb::parse_target(&section.name).ok();
        let mut kept = Vec::new();
        for e in &section.entries {
            let stored = match &target {
                Some(who) if mondb::check_set(&e.key, &e.value).is_ok() => {
                    ctx.command(
                        "config assimilate-conf",
                        MonCommand::ConfigSet {
                            who: who.clone(),
                            name: e.key.clone(),
                            value: e.value.clone(),
                        },
                    )
                    .await?;
                    true
                }
                _ => false,
            };
            if !stored {
                kept.push(e);
            }
        }
        if !kept.is_empty() {
            leftover.push_str(&format!("[{}]\n", section.name));
            for e in kept {
                // Quoted only where the conf grammar needs it (as Ceph prints).
                let plain = !e.value.is_empty()
                    && e.value.trim() == e.value
                    && !e.value.contains(['#', ';', '"', '\\', '\n']);
                let v = if plain {
                    e.value.clone()
                } else {
                    quarry_common::conf::quote_value(&e.value)
                };
                leftover.push_str(&format!("\t{} = {v}\n", e.key));
            }
            leftover.push('\n');
        }
    }
    match output {
        Some(path) => std::fs::write(path, leftover).map_err(|e| {
            cerr(
                e.raw_os_error().map_or(Errno::EIO, Errno::from_code),
                format!("{path}: {e}"),
            )
        }),
        None => {
            print!("{leftover}");
            Ok(())
        }
    }
}

/// Objects and bytes over all pools (best effort: a pool deleted meanwhile counts 0).
async fn usage(ctx: &Ctx) -> (u64, u64) {
    let mut objs = 0;
    let mut bytes = 0;
    for p in ctx.rados.pool_list().await.unwrap_or_default() {
        if let Ok(s) = ctx.rados.pool_stat(p.id).await {
            objs += s.num_objects;
            bytes += s.num_bytes;
        }
    }
    (objs, bytes)
}

/// `ceph pg ls [POOL_ID] [STATE...]` / `ceph pg ls-by-pool POOL [STATE...]`:
/// every PG (of one pool) whose state has all the given words, with its
/// up and acting sets and its last deep scrub.
async fn pg_ls(ctx: &Ctx, pool: Option<&str>, states: &[String]) -> CmdResult {
    let map = ctx.map("pg ls").await?;
    let pool_id = match pool {
        None => None,
        Some(p) => Some(
            match p
                .parse::<i64>()
                .ok()
                .filter(|id| map.pools.contains_key(id))
            {
                Some(id) => id,
                None => map
                    .pool_by_name(p)
                    .map(|d| d.id)
                    .ok_or_else(|| cerr(Errno::ENOENT, format!("pool '{p}' does not exist")))?,
            },
        ),
    };
    const KNOWN: [&str; 6] = [
        "active",
        "clean",
        "undersized",
        "peered",
        "inconsistent",
        "unknown",
    ];
    for st in states {
        if !KNOWN.contains(&st.as_str()) {
            return Err(cerr(
                Errno::EINVAL,
                format!("unknown pg state '{st}' (known: {})", KNOWN.join(", ")),
            ));
        }
    }
    let status = match ctx.command("pg ls", MonCommand::Status).await? {
        MonReply::Status(s) => s,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    let stamps: BTreeMap<quarry_map::PgId, u64> =
        match ctx.command("pg ls", MonCommand::ScrubStamps).await? {
            MonReply::ScrubStamps(v) => v.into_iter().collect(),
            other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
        };
    let mut rows: Vec<PgRow> = Vec::new();
    for p in map
        .pools
        .values()
        .filter(|p| pool_id.is_none_or(|id| id == p.id))
    {
        for seed in 0..p.pg_num {
            let pg = quarry_map::PgId { pool: p.id, seed };
            let state = pg_state(&map, pg, &status.inconsistent);
            let words: Vec<&str> = state.split('+').collect();
            if !states.iter().all(|s| words.contains(&s.as_str())) {
                continue;
            }
            let up = map.pg_up_set(pg).unwrap_or_default();
            let acting = map
                .pg_history
                .get(&pg)
                .map(|h| h.acting.clone())
                .unwrap_or_default();
            rows.push((pg, state, up, acting, stamps.get(&pg).copied()));
        }
    }
    let stats = pg_stats(ctx, &rows).await;
    if ctx.json() {
        let v: Vec<Value> = rows
            .iter()
            .zip(&stats)
            .map(|((pg, state, up, acting, stamp), st)| {
                json!({"pgid": pg.to_string(), "state": state, "up": up, "acting": acting,
                    "up_primary": up.first().map_or(-1, |&o| i64::from(o)),
                    "acting_primary": acting.first().map_or(-1, |&o| i64::from(o)),
                    "stat_sum": st.map(|s| json!({"num_objects": s.num_objects, "num_bytes": s.num_bytes})),
                    "last_deep_scrub_stamp": stamp.map(crate::rbd::iso_utc)})
            })
            .collect();
        ctx.print_json(&json!({"pg_ready": true, "pg_stats": v}));
        return Ok(());
    }
    let set = |v: &[u32]| {
        let ids: Vec<String> = v.iter().map(|o| o.to_string()).collect();
        match v.first() {
            Some(p) => format!("[{}]p{p}", ids.join(",")),
            None => "[]p-1".to_string(),
        }
    };
    let mut t = Table::new(&[
        ("PG", Align::Left),
        ("OBJECTS", Align::Right),
        ("BYTES", Align::Right),
        ("STATE", Align::Left),
        ("UP", Align::Left),
        ("ACTING", Align::Left),
        ("DEEP_SCRUB_STAMP", Align::Left),
    ]);
    for ((pg, state, up, acting, stamp), st) in rows.iter().zip(&stats) {
        t.row(vec![
            pg.to_string(),
            st.map_or("-".to_string(), |s| s.num_objects.to_string()),
            st.map_or("-".to_string(), |s| s.num_bytes.to_string()),
            state.clone(),
            set(up),
            set(acting),
            stamp.map_or("-".to_string(), crate::rbd::iso_utc),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// A `ceph pg ls` row: PG, state, up set, acting set, last deep scrub.
type PgRow = (quarry_map::PgId, String, Vec<u32>, Vec<u32>, Option<u64>);

/// Objects and bytes of each listed PG, asked of its primary. A PG that is
/// not active (no primary to answer) or does not answer within 5 s shows
/// as unknown instead of holding up the listing.
async fn pg_stats(ctx: &Ctx, rows: &[PgRow]) -> Vec<Option<quarry_rados::PoolStat>> {
    use futures::StreamExt;
    let asks = rows.iter().map(|(pg, state, ..)| {
        let rados = Arc::clone(&ctx.rados);
        let active = state.split('+').any(|w| w == "active");
        let pg = *pg;
        async move {
            if !active {
                return None;
            }
            let ask = rados.pg_stat(pg.pool, pg.seed);
            match tokio::time::timeout(std::time::Duration::from_secs(5), ask).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::warn!(%pg, error = %e, "pg stat failed");
                    None
                }
                Err(_) => None,
            }
        }
    });
    futures::stream::iter(asks).buffered(16).collect().await
}

async fn status(ctx: &Ctx) -> CmdResult {
    let (objs, bytes) = usage(ctx).await;
    let Some(monc) = &ctx.monc else {
        let pools = ctx.rados.pool_list().await.unwrap_or_default();
        if ctx.json() {
            ctx.print_json(&json!({"health": {"status": "HEALTH_OK"}, "embedded": true,
                "pgmap": {"num_pools": pools.len(), "num_objects": objs, "data_bytes": bytes}}));
        } else {
            println!("  cluster:\n    id:     embedded\n    health: HEALTH_OK\n ");
            println!(
                "  data:\n    pools:   {} pools\n    objects: {} objects, {}\n ",
                pools.len(),
                objs,
                format_size(bytes)
            );
        }
        return Ok(());
    };
    let st = match monc.command(MonCommand::Status).await.map_err(mon_err)? {
        MonReply::Status(s) => s,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    let map = monc.map();
    let pgs = pg_states(&map, &st.inconsistent);
    if ctx.json() {
        ctx.print_json(&report::status_json(&st, &map, objs, bytes));
        return Ok(());
    }
    let mut s = String::new();
    s += "  cluster:\n";
    s += &format!("    id:     {}\n", st.fsid);
    s += &format!("    health: {}\n", st.health);
    for c in &st.checks {
        s += &format!("            {}\n", c.summary);
    }
    s += " \n  services:\n";
    s += &format!(
        "    mon: {} daemons, quorum {}\n",
        st.mons.len(),
        st.quorum.join(",")
    );
    s += &format!(
        "    osd: {} osds: {} up, {} in\n",
        st.num_osds, st.num_up_osds, st.num_in_osds
    );
    s += " \n  data:\n";
    s += &format!("    pools:   {} pools, {} pgs\n", st.num_pools, st.num_pgs);
    s += &format!("    objects: {} objects, {}\n", objs, format_size(bytes));
    let pg_line: Vec<String> = pgs.iter().map(|(k, v)| format!("{v} {k}")).collect();
    s += &format!("    pgs:     {}\n", pg_line.join("\n             "));
    s += " \n";
    print!("{s}");
    Ok(())
}

async fn health(ctx: &Ctx, detail: bool) -> CmdResult {
    let (h, checks) = match &ctx.monc {
        None => ("HEALTH_OK".to_string(), Vec::new()),
        Some(m) => match m.command(MonCommand::Status).await.map_err(mon_err)? {
            MonReply::Status(s) => (s.health.to_string(), s.checks),
            other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
        },
    };
    if ctx.json() {
        ctx.print_json(&health_json(&h, &checks, detail));
        return Ok(());
    }
    print!("{}", report::health_text(&h, &checks, detail));
    Ok(())
}

/// One pool's row of `ceph df`.
struct DfRow {
    name: String,
    id: i64,
    pgs: u32,
    stored: u64,
    objects: u64,
    used: u64,
    max_avail: u64,
    quota: quarry_monc::PoolQuotaInfo,
}

/// `ceph df [detail]`, Ceph's layout: raw storage from the OSDs' latest
/// reports, then per pool what it stores, the raw bytes of its copies,
/// %USED and MAX AVAIL (the free raw space over its replica count, capped
/// by its byte quota); `detail` adds the quotas.
async fn df(ctx: &Ctx, detail: bool) -> CmdResult {
    let pools = ctx
        .rados
        .pool_list()
        .await
        .map_err(|e| cerr(e.errno, e.to_string()))?;
    let map = ctx.monc.as_ref().map(|m| m.map());
    // Raw capacity: the up OSDs' fresh filesystem reports.
    let (mut raw_total, mut raw_avail) = (0u64, 0u64);
    if let Some(m) = &ctx.monc {
        if let MonReply::OsdUsage(v) = m.command(MonCommand::OsdDf).await.map_err(mon_err)? {
            for (_, total, avail) in v {
                raw_total += total;
                raw_avail += avail.min(total);
            }
        }
    }
    let mut rows = Vec::new();
    for p in &pools {
        let st = ctx.rados.pool_stat(p.id).await.unwrap_or_default();
        let def = map.as_ref().and_then(|m| m.pools.get(&p.id));
        let size = def.map_or(1, |d| d.size.max(1)) as u64;
        let quota = match &ctx.monc {
            Some(m) => match m
                .command(MonCommand::PoolGetQuota {
                    name: p.name.clone(),
                })
                .await
                .map_err(mon_err)?
            {
                MonReply::PoolQuota(q) => q,
                _ => Default::default(),
            },
            None => Default::default(),
        };
        let mut max_avail = raw_avail / size;
        if quota.max_bytes > 0 {
            max_avail = max_avail.min(quota.max_bytes.saturating_sub(st.num_bytes));
        }
        rows.push(DfRow {
            name: p.name.clone(),
            id: p.id,
            pgs: def.map_or(0, |d| d.pg_num),
            stored: st.num_bytes,
            objects: st.num_objects,
            used: st.num_bytes.saturating_mul(size),
            max_avail,
            quota,
        });
    }
    let ratio = |used: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            used as f64 / of as f64
        }
    };
    let raw_used = raw_total - raw_avail;
    if ctx.json() {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut st = json!({"stored": r.stored, "objects": r.objects,
                    "kb_used": r.used.div_ceil(1024), "bytes_used": r.used,
                    "percent_used": ratio(r.used, r.used + r.max_avail), "max_avail": r.max_avail});
                if detail {
                    st["quota_objects"] = json!(r.quota.max_objects);
                    st["quota_bytes"] = json!(r.quota.max_bytes);
                }
                json!({"name": r.name, "id": r.id, "stats": st})
            })
            .collect();
        let stored_raw: u64 = rows.iter().map(|r| r.used).sum();
        ctx.print_json(
            &json!({"stats": {"total_bytes": raw_total, "total_avail_bytes": raw_avail,
            "total_used_bytes": raw_used, "total_used_raw_bytes": raw_used,
            "total_used_raw_ratio": ratio(raw_used, raw_total),
            "total_stored_raw_bytes": stored_raw}, "pools": v}),
        );
        return Ok(());
    }
    let pct = |r: f64| {
        if r == 0.0 {
            "0".to_string()
        } else {
            format!("{:.2}", r * 100.0)
        }
    };
    if ctx.monc.is_some() {
        let mut t = Table::new(&[
            ("CLASS", Align::Left),
            ("SIZE", Align::Right),
            ("AVAIL", Align::Right),
            ("USED", Align::Right),
            ("RAW USED", Align::Right),
            ("%RAW USED", Align::Right),
        ]);
        t.row(vec![
            "TOTAL".into(),
            format_size(raw_total),
            format_size(raw_avail),
            format_size(raw_used),
            format_size(raw_used),
            pct(ratio(raw_used, raw_total)),
        ]);
        println!("--- RAW STORAGE ---");
        print!("{}", t.render());
        println!(" ");
    }
    let mut cols = vec![
        ("POOL", Align::Left),
        ("ID", Align::Right),
        ("PGS", Align::Right),
        ("STORED", Align::Right),
        ("OBJECTS", Align::Right),
        ("USED", Align::Right),
        ("%USED", Align::Right),
        ("MAX AVAIL", Align::Right),
    ];
    if detail {
        cols.push(("QUOTA OBJECTS", Align::Right));
        cols.push(("QUOTA BYTES", Align::Right));
    }
    let mut t = Table::new(&cols);
    for r in &rows {
        let mut row = vec![
            r.name.clone(),
            r.id.to_string(),
            r.pgs.to_string(),
            format_size(r.stored),
            r.objects.to_string(),
            format_size(r.used),
            pct(ratio(r.used, r.used + r.max_avail)),
            format_size(r.max_avail),
        ];
        if detail {
            row.push(if r.quota.max_objects == 0 {
                "N/A".into()
            } else {
                si_count(r.quota.max_objects)
            });
            row.push(if r.quota.max_bytes == 0 {
                "N/A".into()
            } else {
                format_size(r.quota.max_bytes)
            });
        }
        t.row(row);
    }
    println!("--- POOLS ---");
    print!("{}", t.render());
    Ok(())
}

/// `ceph osd df`: per OSD its filesystem size, use and free space (as its
/// latest report to the monitors says; `-` if none is recent), the share
/// of the average use (VAR) and how many PGs it serves.
async fn osd_df(ctx: &Ctx) -> CmdResult {
    let map = ctx.map("osd df").await?;
    let usage: BTreeMap<quarry_map::OsdId, (u64, u64)> =
        match ctx.command("osd df", MonCommand::OsdDf).await? {
            MonReply::OsdUsage(v) => v.into_iter().map(|(o, t, a)| (o, (t, a.min(t)))).collect(),
            other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
        };
    let mut pgs: BTreeMap<quarry_map::OsdId, u32> = BTreeMap::new();
    for p in map.pools.values() {
        for seed in 0..p.pg_num {
            let pg = quarry_map::PgId { pool: p.id, seed };
            for o in map.pg_up_set(pg).unwrap_or_default() {
                *pgs.entry(o).or_default() += 1;
            }
        }
    }
    let util = |(t, a): (u64, u64)| {
        if t == 0 {
            0.0
        } else {
            (t - a) as f64 * 100.0 / t as f64
        }
    };
    let (total, avail) = usage
        .values()
        .fold((0u64, 0u64), |(t, a), (ut, ua)| (t + ut, a + ua));
    let avg = util((total, avail));
    let var = |u: f64| if avg > 0.0 { u / avg } else { 0.0 };
    let vars: Vec<f64> = usage.values().map(|&x| var(util(x))).collect();
    let min_var = vars.iter().copied().fold(f64::INFINITY, f64::min);
    let max_var = vars.iter().copied().fold(0.0, f64::max);
    let stddev = if usage.is_empty() {
        0.0
    } else {
        let n = usage.len() as f64;
        (usage
            .values()
            .map(|&x| (util(x) - avg).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    };
    let min_var = if min_var.is_finite() { min_var } else { 0.0 };
    if ctx.json() {
        let nodes: Vec<Value> = map
            .osds
            .values()
            .map(|o| {
                let u = usage.get(&o.id).copied();
                json!({"id": o.id, "name": format!("osd.{}", o.id), "type": "osd",
                    "crush_weight": weight(o.weight),
                    "reweight": if o.in_cluster {1.0} else {0.0},
                    "kb": u.map(|(t, _)| t / 1024),
                    "kb_used": u.map(|(t, a)| (t - a) / 1024),
                    "kb_avail": u.map(|(_, a)| a / 1024),
                    "utilization": u.map(util),
                    "var": u.map(|x| var(util(x))),
                    "pgs": pgs.get(&o.id).copied().unwrap_or(0),
                    "status": if o.up {"up"} else {"down"}})
            })
            .collect();
        ctx.print_json(&json!({"nodes": nodes, "summary": {
            "total_kb": total / 1024, "total_kb_used": (total - avail) / 1024,
            "total_kb_avail": avail / 1024, "average_utilization": avg,
            "min_var": min_var, "max_var": max_var, "dev": stddev}}));
        return Ok(());
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("CLASS", Align::Left),
        ("WEIGHT", Align::Right),
        ("REWEIGHT", Align::Right),
        ("SIZE", Align::Right),
        ("RAW USE", Align::Right),
        ("AVAIL", Align::Right),
        ("%USE", Align::Right),
        ("VAR", Align::Right),
        ("PGS", Align::Right),
        ("STATUS", Align::Left),
    ]);
    let dash = || "-".to_string();
    for o in map.osds.values() {
        let u = usage.get(&o.id).copied();
        t.row(vec![
            o.id.to_string(),
            String::new(),
            format!("{:.5}", weight(o.weight)),
            format!("{:.5}", if o.in_cluster { 1.0 } else { 0.0 }),
            u.map_or_else(dash, |(t, _)| format_size(t)),
            u.map_or_else(dash, |(t, a)| format_size(t - a)),
            u.map_or_else(dash, |(_, a)| format_size(a)),
            u.map_or_else(dash, |x| format!("{:.2}", util(x))),
            u.map_or_else(dash, |x| format!("{:.2}", var(util(x)))),
            pgs.get(&o.id).copied().unwrap_or(0).to_string(),
            if o.up { "up" } else { "down" }.to_string(),
        ]);
    }
    t.row(vec![
        String::new(),
        String::new(),
        String::new(),
        "TOTAL".into(),
        format_size(total),
        format_size(total - avail),
        format_size(avail),
        format!("{avg:.2}"),
        String::new(),
        String::new(),
        String::new(),
    ]);
    print!("{}", t.render());
    println!("MIN/MAX VAR: {min_var:.2}/{max_var:.2}  STDDEV: {stddev:.2}");
    Ok(())
}

fn weight(w: u32) -> f64 {
    f64::from(w) / f64::from(quarry_map::WEIGHT_ONE)
}

async fn osd_tree(ctx: &Ctx) -> CmdResult {
    let map = ctx.map("osd tree").await?;
    let mut hosts: BTreeMap<&str, Vec<&quarry_map::OsdInfo>> = BTreeMap::new();
    for o in map.osds.values() {
        hosts.entry(o.host.as_str()).or_default().push(o);
    }
    if ctx.json() {
        let nodes: Vec<Value> = map
            .osds
            .values()
            .map(|o| json!({"id": o.id, "name": format!("osd.{}", o.id), "type": "osd",
                "host": o.host, "crush_weight": weight(o.weight),
                "status": if o.up {"up"} else {"down"}, "reweight": if o.in_cluster {1.0} else {0.0}}))
            .collect();
        ctx.print_json(&json!({"nodes": nodes}));
        return Ok(());
    }
    let total: f64 = map.osds.values().map(|o| weight(o.weight)).sum();
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("CLASS", Align::Left),
        ("WEIGHT", Align::Right),
        ("TYPE NAME", Align::Left),
        ("STATUS", Align::Right),
        ("REWEIGHT", Align::Right),
        ("PRI-AFF", Align::Right),
    ]);
    t.row(vec![
        "-1".into(),
        String::new(),
        format!("{total:.5}"),
        "root default".into(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    for (i, (h, osds)) in hosts.iter().enumerate() {
        let hw: f64 = osds.iter().map(|o| weight(o.weight)).sum();
        t.row(vec![
            format!("-{}", i + 2),
            String::new(),
            format!("{hw:.5}"),
            format!("    host {h}"),
            String::new(),
            String::new(),
            String::new(),
        ]);
        for o in osds {
            t.row(vec![
                o.id.to_string(),
                String::new(),
                format!("{:.5}", weight(o.weight)),
                format!("        osd.{}", o.id),
                if o.up { "up" } else { "down" }.into(),
                if o.in_cluster { "1.00000" } else { "0" }.into(),
                "1.00000".into(),
            ]);
        }
    }
    print!("{}", t.render());
    Ok(())
}

async fn osd_ls(ctx: &Ctx) -> CmdResult {
    let map = ctx.map("osd ls").await?;
    if ctx.json() {
        ctx.print_json(&json!(map.osds.keys().collect::<Vec<_>>()));
    } else {
        for id in map.osds.keys() {
            println!("{id}");
        }
    }
    Ok(())
}

async fn osd_stat(ctx: &Ctx) -> CmdResult {
    let map = ctx.map("osd stat").await?;
    let flags = match ctx.command("osd stat", MonCommand::Status).await? {
        MonReply::Status(s) => s.osd_flags,
        _ => Vec::new(),
    };
    let n = map.osds.len();
    let up = map.osds.values().filter(|o| o.up).count();
    let inn = map.osds.values().filter(|o| o.in_cluster).count();
    if ctx.json() {
        ctx.print_json(
            &json!({"epoch": map.epoch, "num_osds": n, "num_up_osds": up,
            "num_in_osds": inn, "flags": flags.join(",")}),
        );
    } else {
        println!("{n} osds: {up} up, {inn} in; epoch: e{}", map.epoch);
        if !flags.is_empty() {
            println!("flags {}", flags.join(","));
        }
    }
    Ok(())
}

/// `ceph osd dump`: the map as Ceph prints it (the lines Quarry has:
/// epoch, fsid, flags, ratios, pools, OSDs).
async fn osd_dump(ctx: &Ctx) -> CmdResult {
    let map = ctx.map("osd dump").await?;
    let st = match ctx.command("osd dump", MonCommand::Status).await? {
        MonReply::Status(s) => s,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    let ratio = |m: u32| f64::from(m) / 1000.0;
    let pools: Vec<quarry_map::PoolDef> = map.pools.values().cloned().collect();
    let apps = pool_apps(ctx, &pools).await?;
    if ctx.json() {
        ctx.print_json(&json!({
            "epoch": map.epoch, "fsid": map.fsid, "flags": st.osd_flags.join(","),
            "full_ratio": ratio(st.full_milli), "nearfull_ratio": ratio(st.nearfull_milli),
            "pools": map.pools.values().map(|p| json!({"pool": p.id, "pool_name": p.name,
                "type": 1, "size": p.size, "min_size": p.min_size, "pg_num": p.pg_num,
                "pg_placement_num": p.pg_num, "snap_seq": p.snap_seq,
                "application_metadata": apps_json(&apps, p.id)})).collect::<Vec<_>>(),
            "max_osd": map.osds.keys().next_back().map_or(0, |m| m + 1),
            "osds": map.osds.values().map(|o| json!({"osd": o.id, "up": u8::from(o.up),
                "in": u8::from(o.in_cluster), "weight": f64::from(o.weight) / f64::from(quarry_map::WEIGHT_ONE),
                "up_from": o.up_from, "down_at": o.down_at, "public_addr": o.addr,
                "host": o.host})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut s = String::new();
    s += &format!("epoch {}\nfsid {}\n", map.epoch, map.fsid);
    s += &format!("flags {}\n", st.osd_flags.join(","));
    s += &format!("full_ratio {}\n", ratio(st.full_milli));
    s += &format!("nearfull_ratio {}\n", ratio(st.nearfull_milli));
    s.push('\n');
    for p in map.pools.values() {
        s += &format!(
            "pool {} '{}' replicated size {} min_size {} pg_num {} pgp_num {} snap_seq {}",
            p.id, p.name, p.size, p.min_size, p.pg_num, p.pg_num, p.snap_seq
        );
        s += &apps_text(&apps, p.id);
        s.push('\n');
    }
    s.push('\n');
    s += &format!(
        "max_osd {}\n",
        map.osds.keys().next_back().map_or(0, |m| m + 1)
    );
    for o in map.osds.values() {
        s += &format!(
            "osd.{} {} {} weight {} up_from {} down_at {} {} host {}\n",
            o.id,
            if o.up { "up  " } else { "down" },
            if o.in_cluster { "in " } else { "out" },
            f64::from(o.weight) / f64::from(quarry_map::WEIGHT_ONE),
            o.up_from,
            o.down_at,
            o.addr,
            o.host
        );
    }
    print!("{s}");
    Ok(())
}

/// `ceph osd map POOL OBJECT [NSPACE]`: the placement any client computes
/// from the map alone (up set = acting set here: no pg_temp).
async fn osd_map(ctx: &Ctx, pool: &str, object: &str, nspace: &str) -> CmdResult {
    let map = ctx.map("osd map").await?;
    let def = map
        .pool_by_name(pool)
        .ok_or_else(|| cerr(Errno::ENOENT, format!("pool '{pool}' does not exist")))?;
    let pg = map
        .object_pg(def.id, nspace, object)
        .map_err(|e| cerr(Errno::ENOENT, format!("osd map: {e}")))?;
    let up = map
        .pg_up_set(pg)
        .map_err(|e| cerr(Errno::ENOENT, format!("osd map: {e}")))?;
    let primary = up.first().map_or(-1, |&p| i64::from(p));
    if ctx.json() {
        ctx.print_json(&json!({"epoch": map.epoch, "pool": pool, "pool_id": def.id,
            "objname": object, "namespace": nspace, "pgid": pg.to_string(),
            "up": up, "up_primary": primary, "acting": up, "acting_primary": primary}));
    } else {
        let set = up
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let obj = if nspace.is_empty() {
            format!("'{object}'")
        } else {
            format!("'{object}' namespace '{nspace}'")
        };
        println!(
            "osdmap e{} pool '{pool}' ({}) object {obj} -> pg {pg} -> up ([{set}], p{primary}) acting ([{set}], p{primary})",
            map.epoch, def.id
        );
    }
    Ok(())
}

fn osd_id(s: &str) -> CmdResult<quarry_map::OsdId> {
    s.strip_prefix("osd.")
        .unwrap_or(s)
        .parse()
        .map_err(|_| cerr(Errno::EINVAL, format!("invalid osd id '{s}'")))
}

async fn osd_mark(ctx: &Ctx, how: &str, ids: &[String]) -> CmdResult {
    let map = ctx.map(&format!("osd {how}")).await?;
    for s in ids {
        let id = osd_id(s)?;
        if !map.osds.contains_key(&id) {
            return Err(cerr(Errno::ENOENT, format!("osd.{id} does not exist")));
        }
        let cmd = match how {
            "down" => MonCommand::OsdDown { id },
            "out" => MonCommand::OsdOut { id },
            _ => MonCommand::OsdIn { id },
        };
        ctx.command(&format!("osd {how}"), cmd).await?;
        eprintln!("marked {how} osd.{id}. ");
    }
    Ok(())
}

/// `ceph osd crush reweight osd.N W`.
async fn crush_reweight(ctx: &Ctx, name: &str, weight: &str) -> CmdResult {
    let id = osd_id(name)?;
    let w = parse_weight(weight)?;
    ctx.command(
        "osd crush reweight",
        MonCommand::OsdCrushReweight { id, weight: w },
    )
    .await?;
    eprintln!(
        "reweighted item id {id} name 'osd.{id}' to {} in crush map",
        weight.trim()
    );
    Ok(())
}

/// A weight in Ceph's units (1.0 = `WEIGHT_ONE`), 0 to 65535.
fn parse_weight(s: &str) -> CmdResult<u32> {
    let max = f64::from(quarry_map::MAX_OSD_WEIGHT / quarry_map::WEIGHT_ONE);
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|w| w.is_finite() && (0.0..=max).contains(w))
        .map(|w| (w * f64::from(quarry_map::WEIGHT_ONE)).round() as u32)
        .ok_or_else(|| {
            cerr(
                Errno::EINVAL,
                format!("invalid weight '{s}': a number from 0 to {max}"),
            )
        })
}

/// Parse OSD ids that must exist in `map`.
fn existing_osds(map: &ClusterMap, ids: &[String]) -> CmdResult<Vec<quarry_map::OsdId>> {
    ids.iter()
        .map(|s| {
            let id = osd_id(s)?;
            if map.osds.contains_key(&id) {
                Ok(id)
            } else {
                Err(cerr(Errno::ENOENT, format!("osd.{id} does not exist")))
            }
        })
        .collect()
}

/// Every PG of the map.
fn all_pgs(map: &ClusterMap) -> impl Iterator<Item = quarry_map::PgId> + '_ {
    map.pools
        .values()
        .flat_map(|p| (0..p.pg_num).map(|seed| quarry_map::PgId { pool: p.id, seed }))
}

fn id_list(ids: &[quarry_map::OsdId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `ceph osd ok-to-stop N...`: from the map alone, whether every PG these
/// OSDs serve stays active (its up set keeps `min_size` members) without them.
async fn osd_ok_to_stop(ctx: &Ctx, ids: &[String]) -> CmdResult {
    let map = ctx.map("osd ok-to-stop").await?;
    let ids = existing_osds(&map, ids)?;
    let (mut degraded, mut unavailable) = (0u32, 0u32);
    for pg in all_pgs(&map) {
        let up = map
            .pg_up_set(pg)
            .map_err(|e| cerr(e.errno(), e.to_string()))?;
        if !up.iter().any(|o| ids.contains(o)) {
            continue;
        }
        let min = map.pools.get(&pg.pool).map_or(1, |p| p.min_size.max(1));
        let left = up.iter().filter(|o| !ids.contains(o)).count() as u32;
        if left < min || !map.pg_history.contains_key(&pg) {
            unavailable += 1;
        } else {
            degraded += 1;
        }
    }
    if unavailable > 0 {
        return Err(cerr(
            Errno::EBUSY,
            format!("{unavailable} PGs are already too degraded, would become too degraded or might become unavailable"),
        ));
    }
    println!(
        "OSD(s) {} are ok to stop without reducing availability, provided there are no other concurrent failures or interventions.\n{degraded} PGs are likely to be degraded (but remain available) as a result.",
        id_list(&ids)
    );
    Ok(())
}

/// `ceph osd safe-to-destroy N...`: no PG maps to these OSDs or was last
/// active on them, and every PG is clean (its copies are all elsewhere).
async fn osd_safe_to_destroy(ctx: &Ctx, ids: &[String]) -> CmdResult {
    let map = ctx.map("osd safe-to-destroy").await?;
    let ids = existing_osds(&map, ids)?;
    let (mut mapped, mut unclean) = (0u32, 0u32);
    for pg in all_pgs(&map) {
        let raw = map
            .pg_raw_set(pg)
            .map_err(|e| cerr(e.errno(), e.to_string()))?;
        let acting = map.pg_history.get(&pg).map(|h| h.acting.as_slice());
        if raw
            .iter()
            .chain(acting.unwrap_or_default())
            .any(|o| ids.contains(o))
        {
            mapped += 1;
        } else if report::pg_state(&map, pg, &[]) != "active+clean"
            || acting != Some(map.pg_up_set(pg).unwrap_or_default().as_slice())
        {
            unclean += 1;
        }
    }
    let list = id_list(&ids);
    if mapped > 0 {
        return Err(cerr(
            Errno::EBUSY,
            format!("OSD(s) {list} have {mapped} pgs currently mapped to them"),
        ));
    }
    if unclean > 0 {
        return Err(cerr(
            Errno::EBUSY,
            format!("OSD(s) {list}: {unclean} pgs are not active+clean yet, so their data may not be fully copied elsewhere"),
        ));
    }
    println!("OSD(s) {list} are safe to destroy without reducing data durability.");
    Ok(())
}

/// `ceph osd lost N --yes-i-really-mean-it`.
async fn osd_lost(ctx: &Ctx, osd: &str, yes: bool) -> CmdResult {
    let id = osd_id(osd)?;
    if !yes {
        return Err(cerr(
            Errno::EPERM,
            format!("Are you SURE? Marking osd.{id} lost gives up every write only it holds. Pass --yes-i-really-mean-it if you really do."),
        ));
    }
    let epoch = match ctx.command("osd lost", MonCommand::OsdLost { id }).await? {
        MonReply::Ok { epoch } => epoch,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    eprintln!("marked osd lost in epoch {epoch}");
    Ok(())
}

/// `ceph osd rm N...` and `ceph osd purge N`.
async fn osd_remove(ctx: &Ctx, ids: &[String], purge: bool) -> CmdResult {
    let ids = ids
        .iter()
        .map(|s| osd_id(s))
        .collect::<CmdResult<Vec<_>>>()?;
    let map = ctx.map("osd rm").await?;
    let cmd = MonCommand::OsdRemove {
        ids: ids.clone(),
        purge,
    };
    ctx.command(if purge { "osd purge" } else { "osd rm" }, cmd)
        .await?;
    for id in ids {
        match (purge, map.osds.contains_key(&id)) {
            (_, false) => eprintln!("osd.{id} does not exist. "),
            (true, true) => eprintln!("purged osd.{id}"),
            (false, true) => eprintln!("removed osd.{id}"),
        }
    }
    Ok(())
}

/// `ceph osd set-full-ratio|set-nearfull-ratio R`.
async fn set_full_ratio(ctx: &Ctx, ratio: &str, full: bool) -> CmdResult {
    let r: f64 = ratio
        .trim()
        .parse()
        .ok()
        .filter(|r: &f64| *r > 0.0 && *r <= 1.0)
        .ok_or_else(|| {
            cerr(
                Errno::EINVAL,
                format!("invalid ratio '{ratio}': a number in (0, 1]"),
            )
        })?;
    let milli = ((r * 1000.0).round() as u32).max(1);
    let what = if full {
        "set-full-ratio"
    } else {
        "set-nearfull-ratio"
    };
    ctx.command(
        &format!("osd {what}"),
        MonCommand::SetFullRatio { full, milli },
    )
    .await?;
    Ok(())
}

/// `ceph osd set|unset FLAG`, with Ceph's confirmation on stderr.
async fn osd_flag(ctx: &Ctx, flag: &str, set: bool) -> CmdResult {
    let what = if set { "set" } else { "unset" };
    ctx.command(
        &format!("osd {what}"),
        MonCommand::OsdFlag {
            flag: flag.to_string(),
            set,
        },
    )
    .await?;
    eprintln!("{flag} is {what}");
    Ok(())
}

async fn blocklist(ctx: &Ctx, cmd: BlocklistCmd) -> CmdResult {
    use crate::rbd::iso_utc;
    let addr_err =
        |a: &str, e: String| cerr(Errno::EINVAL, format!("unable to parse addr '{a}': {e}"));
    match cmd {
        BlocklistCmd::Add { addr, expire } => {
            quarry_map::ClientAddr::parse(&addr).map_err(|e| addr_err(&addr, e))?;
            let secs = match expire {
                None => None,
                Some(x) if x.is_finite() && x > 0.0 && x < 1e10 => Some(x.ceil() as u64),
                Some(x) => {
                    return Err(cerr(
                        Errno::EINVAL,
                        format!("invalid expire '{x}': a positive number of seconds"),
                    ))
                }
            };
            let r = ctx
                .command(
                    "osd blocklist add",
                    MonCommand::BlocklistAdd {
                        addr,
                        expire_secs: secs,
                    },
                )
                .await?;
            if let MonReply::Blocklisted {
                addr, until_unix, ..
            } = r
            {
                eprintln!(
                    "blocklisting {addr} until {} ({} sec)",
                    iso_utc(until_unix),
                    secs.unwrap_or(3600)
                );
            }
        }
        BlocklistCmd::Rm { addr } => {
            quarry_map::ClientAddr::parse(&addr).map_err(|e| addr_err(&addr, e))?;
            let r = ctx
                .command("osd blocklist rm", MonCommand::BlocklistRm { addr })
                .await?;
            if let MonReply::Blocklisted { addr, existed, .. } = r {
                if existed {
                    eprintln!("un-blocklisting {addr}");
                } else {
                    eprintln!("{addr} isn't blocklisted");
                }
            }
        }
        BlocklistCmd::Ls => {
            let r = ctx
                .command("osd blocklist ls", MonCommand::BlocklistList)
                .await?;
            let MonReply::Blocklist(entries) = r else {
                return Err(cerr(Errno::EIO, "unexpected reply to osd blocklist ls"));
            };
            if ctx.json() {
                ctx.print_json(&json!(entries
                    .iter()
                    .map(|(a, u)| json!({"addr": a, "until": iso_utc(*u)}))
                    .collect::<Vec<_>>()));
            } else {
                for (a, u) in &entries {
                    println!("{a} {}", iso_utc(*u));
                }
            }
            eprintln!("listed {} entries", entries.len());
        }
    }
    Ok(())
}

async fn pool_create(
    ctx: &Ctx,
    name: &str,
    pg_num: Option<u32>,
    kind: Option<&str>,
    size: Option<u32>,
) -> CmdResult {
    if matches!(kind, Some(k) if k != "replicated") {
        return Err(cerr(
            Errno::EOPNOTSUPP,
            "only replicated pools are supported",
        ));
    }
    let r = match &ctx.monc {
        Some(m) => m
            .command(MonCommand::PoolCreate {
                name: name.to_string(),
                pg_num,
                size,
                min_size: None,
                application: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| (e.errno(), e.to_string())),
        None => ctx
            .rados
            .pool_create(name)
            .await
            .map(|_| ())
            .map_err(|e| (e.errno, e.to_string())),
    };
    match r {
        Ok(()) => eprintln!("pool '{name}' created"),
        // Ceph treats creating an existing pool as success.
        Err((Errno::EEXIST, _)) => eprintln!("pool '{name}' already exists"),
        Err((errno, msg)) => return Err(cerr(errno, msg)),
    }
    Ok(())
}

async fn pool_ls(ctx: &Ctx, detail: bool) -> CmdResult {
    match &ctx.monc {
        None => {
            let pools = ctx
                .rados
                .pool_list()
                .await
                .map_err(|e| cerr(e.errno, e.to_string()))?;
            if ctx.json() {
                ctx.print_json(&json!(pools.iter().map(|p| &p.name).collect::<Vec<_>>()));
            } else {
                for p in &pools {
                    if detail {
                        println!("pool {} '{}' replicated size 1 min_size 1", p.id, p.name);
                    } else {
                        println!("{}", p.name);
                    }
                }
            }
        }
        Some(m) => {
            let pools = match m.command(MonCommand::PoolList).await.map_err(mon_err)? {
                MonReply::Pools(p) => p,
                other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
            };
            // Quotas (and whether a pool is at one) for the detailed forms.
            let mut quotas = BTreeMap::new();
            if detail {
                for p in &pools {
                    let cmd = MonCommand::PoolGetQuota {
                        name: p.name.clone(),
                    };
                    if let MonReply::PoolQuota(q) = m.command(cmd).await.map_err(mon_err)? {
                        quotas.insert(p.id, q);
                    }
                }
            }
            let quota = |id| quotas.get(&id).cloned().unwrap_or_default();
            let apps = if detail {
                pool_apps(ctx, &pools).await?
            } else {
                BTreeMap::new()
            };
            if ctx.json() {
                if detail {
                    let v: Vec<Value> = pools.iter().map(|p| json!({"pool_id": p.id, "pool_name": p.name,
                        "size": p.size, "min_size": p.min_size, "pg_num": p.pg_num, "pg_placement_num": p.pg_num,
                        "snap_seq": p.snap_seq,
                        "quota_max_bytes": quota(p.id).max_bytes, "quota_max_objects": quota(p.id).max_objects,
                        "application_metadata": apps_json(&apps, p.id)})).collect();
                    ctx.print_json(&Value::Array(v));
                } else {
                    ctx.print_json(&json!(pools.iter().map(|p| &p.name).collect::<Vec<_>>()));
                }
                return Ok(());
            }
            for p in &pools {
                if detail {
                    let app = apps_text(&apps, p.id);
                    // Ceph's flag names and order (bit order); quotas only
                    // when set.
                    let q = quota(p.id);
                    let at_quota = (q.max_objects > 0 && q.objects >= q.max_objects)
                        || (q.max_bytes > 0 && q.bytes >= q.max_bytes);
                    let flags = if at_quota {
                        "hashpspool,full,full_quota,selfmanaged_snaps"
                    } else {
                        "hashpspool,selfmanaged_snaps"
                    };
                    let mut limits = String::new();
                    if q.max_bytes > 0 {
                        limits.push_str(&format!(" max_bytes {}", q.max_bytes));
                    }
                    if q.max_objects > 0 {
                        limits.push_str(&format!(" max_objects {}", q.max_objects));
                    }
                    println!(
                        "pool {} '{}' replicated size {} min_size {} crush_rule 0 object_hash rjenkins pg_num {} pgp_num {} autoscale_mode off flags {flags}{limits} stripe_width 0{app}",
                        p.id, p.name, p.size, p.min_size, p.pg_num, p.pg_num
                    );
                } else {
                    println!("{}", p.name);
                }
            }
        }
    }
    Ok(())
}

async fn pool_rm(ctx: &Ctx, name: &str, name2: Option<&str>, yes: bool) -> CmdResult {
    if name2 != Some(name) || !yes {
        return Err(cerr(
            Errno::EPERM,
            format!("WARNING: this will *PERMANENTLY DESTROY* all data stored in pool {name}.  If you are *ABSOLUTELY CERTAIN* that is what you want, pass the pool name *twice*, followed by --yes-i-really-really-mean-it."),
        ));
    }
    let r = match &ctx.monc {
        Some(m) => m
            .command(MonCommand::PoolDelete {
                name: name.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|e| (e.errno(), e.to_string())),
        None => ctx
            .rados
            .pool_delete(name)
            .await
            .map_err(|e| (e.errno, e.to_string())),
    };
    match r {
        Ok(()) => eprintln!("pool '{name}' removed"),
        Err((Errno::ENOENT, _)) => eprintln!("pool '{name}' does not exist"),
        Err((errno, msg)) => return Err(cerr(errno, msg)),
    }
    Ok(())
}

async fn pool_def(ctx: &Ctx, name: &str) -> CmdResult<quarry_map::PoolDef> {
    let map = ctx.map("osd pool get").await?;
    map.pool_by_name(name)
        .cloned()
        .ok_or_else(|| cerr(Errno::ENOENT, format!("unrecognized pool '{name}'")))
}

async fn pool_get(ctx: &Ctx, name: &str, var: &str) -> CmdResult {
    let p = pool_def(ctx, name).await?;
    let vals = [
        ("size", p.size),
        ("min_size", p.min_size),
        ("pg_num", p.pg_num),
        ("pgp_num", p.pg_num),
    ];
    let chosen: Vec<(&str, u32)> = match var {
        "all" => vals.to_vec(),
        v => match vals.iter().find(|(n, _)| *n == v) {
            Some(x) => vec![*x],
            None => {
                return Err(cerr(
                    Errno::EINVAL,
                    format!("invalid variable '{var}' (size, min_size, pg_num, pgp_num, all)"),
                ))
            }
        },
    };
    if ctx.json() {
        let mut o = serde_json::Map::new();
        o.insert("pool".into(), json!(name));
        o.insert("pool_id".into(), json!(p.id));
        for (k, v) in &chosen {
            o.insert((*k).into(), json!(v));
        }
        ctx.print_json(&Value::Object(o));
    } else {
        for (k, v) in chosen {
            println!("{k}: {v}");
        }
    }
    Ok(())
}

async fn pool_set(ctx: &Ctx, name: &str, var: &str, val: &str) -> CmdResult {
    if !matches!(var, "size" | "min_size" | "pg_num" | "pgp_num") {
        return Err(cerr(
            Errno::EINVAL,
            format!("unsupported variable '{var}' (size, min_size, pg_num)"),
        ));
    }
    if val.parse::<u32>().is_err() {
        return Err(cerr(
            Errno::EINVAL,
            format!("value '{val}' is not a number"),
        ));
    }
    let p = pool_def(ctx, name).await?;
    if var == "pgp_num" {
        // pgp_num always equals pg_num here; accept the common script step.
        eprintln!("set pool {} {var} to {val}", p.id);
        return Ok(());
    }
    ctx.command(
        "osd pool set",
        MonCommand::PoolSet {
            name: name.to_string(),
            var: var.to_string(),
            val: val.to_string(),
        },
    )
    .await?;
    eprintln!("set pool {} {var} to {val}", p.id);
    Ok(())
}

/// A quota's value: `max_bytes` takes sizes (`10G`, `100MiB`), as Ceph's
/// does; `max_objects` a count with an optional SI suffix (`10k`).
fn quota_value(field: &str, val: &str) -> CmdResult<u64> {
    let bad = |why: String| cerr(Errno::EINVAL, format!("error parsing value '{val}': {why}"));
    match field {
        "max_bytes" => quarry_common::size::parse_size(val, quarry_common::size::SizeUnit::Bytes)
            .map_err(|e| bad(e.to_string())),
        "max_objects" => {
            let t = val.trim();
            let (num, mult) = match t.char_indices().last() {
                Some((i, c)) if "kMGTP".contains(c) => {
                    let p = "kMGTP".find(c).unwrap_or(0) as u32 + 1;
                    (&t[..i], 1000u64.pow(p))
                }
                _ => (t, 1),
            };
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| bad("not a whole number of objects".into()))
        }
        other => Err(cerr(
            Errno::EINVAL,
            format!("unrecognized field '{other}' (max_objects or max_bytes)"),
        )),
    }
}

/// Objects as Ceph's `si_u_t` prints a count: `10`, `1k`, `2M`.
fn si_count(n: u64) -> String {
    for (div, suffix) in [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1000, "k"),
    ] {
        if n >= div && n.is_multiple_of(div) {
            return format!("{}{suffix}", n / div);
        }
    }
    n.to_string()
}

async fn pool_set_quota(ctx: &Ctx, name: &str, field: &str, val: &str) -> CmdResult {
    let value = quota_value(field, val)?;
    ctx.command(
        "osd pool set-quota",
        MonCommand::PoolSetQuota {
            name: name.to_string(),
            field: field.to_string(),
            value,
        },
    )
    .await?;
    eprintln!("set-quota {field} = {value} for pool {name}");
    Ok(())
}

async fn pool_rename(ctx: &Ctx, from: &str, to: &str) -> CmdResult {
    let cmd = MonCommand::PoolRename {
        from: from.to_string(),
        to: to.to_string(),
    };
    match ctx.command("osd pool rename", cmd).await? {
        MonReply::Renamed { renamed: true, .. } => {
            eprintln!("pool '{from}' renamed to '{to}'")
        }
        MonReply::Renamed { renamed: false, .. } => {
            eprintln!("pool '{from}' does not exist; pool '{to}' does")
        }
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    }
    Ok(())
}

/// `osd pool application enable|disable|get|set|rm`: the monitors apply
/// Ceph's rules and return its texts (printed on stderr, as Ceph does).
async fn pool_application(ctx: &Ctx, cmd: AppCmd) -> CmdResult {
    let (pool, op) = match cmd {
        AppCmd::Enable { pool, app, yes } => (pool, AppOp::Enable { app, force: yes }),
        AppCmd::Disable { pool, app, yes } => (pool, AppOp::Disable { app, force: yes }),
        AppCmd::Set {
            pool,
            app,
            key,
            value,
        } => (pool, AppOp::Set { app, key, value }),
        AppCmd::Rm { pool, app, key } => (pool, AppOp::Rm { app, key }),
        AppCmd::Get { pool, app, key } => return pool_application_get(ctx, pool, app, key).await,
    };
    match ctx
        .command(
            "osd pool application",
            MonCommand::PoolApplication { pool, op },
        )
        .await?
    {
        MonReply::Applied { message, .. } => eprintln!("{message}"),
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    }
    Ok(())
}

/// `osd pool application get [POOL [APP [KEY]]]`: JSON of every pool's
/// applications, of one pool's, of one application's keys, or one key's
/// value as plain text (Ceph's forms).
async fn pool_application_get(
    ctx: &Ctx,
    pool: Option<String>,
    app: Option<String>,
    key: Option<String>,
) -> CmdResult {
    let plain = ctx.format != CephFormat::Json;
    let Some(pool) = pool else {
        let map = ctx.map("osd pool application get").await?;
        let pools: Vec<quarry_map::PoolDef> = map.pools.values().cloned().collect();
        let apps = pool_apps(ctx, &pools).await?;
        let all: serde_json::Map<String, Value> = pools
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    json!(apps.get(&p.id).cloned().unwrap_or_default()),
                )
            })
            .collect();
        crate::rbd::print_json(&Value::Object(all), plain);
        return Ok(());
    };
    let def = pool_def(ctx, &pool).await?;
    let apps = pool_apps(ctx, std::slice::from_ref(&def))
        .await?
        .remove(&def.id)
        .unwrap_or_default();
    let Some(app) = app else {
        // Ceph prints this command's answer as JSON in any format.
        crate::rbd::print_json(&json!(apps), plain);
        return Ok(());
    };
    let keys = apps.get(&app).ok_or_else(|| {
        cerr(
            Errno::ENOENT,
            format!("application '{app}' is not enabled on pool '{pool}'"),
        )
    })?;
    match key {
        None => crate::rbd::print_json(&json!(keys), plain),
        Some(k) => {
            let v = keys.get(&k).ok_or_else(|| {
                cerr(
                    Errno::ENOENT,
                    format!("application '{app}' on pool '{pool}' does not have key '{k}'"),
                )
            })?;
            println!("{v}");
        }
    }
    Ok(())
}

/// The application metadata of `pools`, from the monitors (pools without
/// any are absent).
async fn pool_apps(
    ctx: &Ctx,
    pools: &[quarry_map::PoolDef],
) -> CmdResult<BTreeMap<PoolId, PoolApplications>> {
    let mut out = BTreeMap::new();
    for p in pools.iter().filter(|p| p.application.is_some()) {
        let cmd = MonCommand::PoolApplicationGet {
            pool: p.name.clone(),
        };
        match ctx.command("osd pool application get", cmd).await? {
            MonReply::PoolApplications(a) => {
                out.insert(p.id, a);
            }
            other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
        }
    }
    Ok(out)
}

/// `application_metadata` as Ceph's JSON dumps show it.
fn apps_json(apps: &BTreeMap<PoolId, PoolApplications>, id: PoolId) -> Value {
    json!(apps.get(&id).cloned().unwrap_or_default())
}

/// ` application a,b` as Ceph's pool lines end (empty without any).
fn apps_text(apps: &BTreeMap<PoolId, PoolApplications>, id: PoolId) -> String {
    match apps.get(&id) {
        Some(a) if !a.is_empty() => {
            format!(
                " application {}",
                a.keys().cloned().collect::<Vec<_>>().join(",")
            )
        }
        _ => String::new(),
    }
}

async fn pool_get_quota(ctx: &Ctx, name: &str) -> CmdResult {
    let q = match ctx
        .command(
            "osd pool get-quota",
            MonCommand::PoolGetQuota {
                name: name.to_string(),
            },
        )
        .await?
    {
        MonReply::PoolQuota(q) => q,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    if ctx.json() {
        ctx.print_json(&json!({"pool_name": q.name, "pool_id": q.pool,
            "quota_max_objects": q.max_objects, "quota_max_bytes": q.max_bytes,
            "current_num_objects": q.objects, "current_num_bytes": q.bytes}));
        return Ok(());
    }
    println!("quotas for pool '{}':", q.name);
    if q.max_objects == 0 {
        println!("  max objects: N/A");
    } else {
        println!(
            "  max objects: {} objects  (current num objects: {} objects)",
            si_count(q.max_objects),
            q.objects
        );
    }
    if q.max_bytes == 0 {
        println!("  max bytes  : N/A");
    } else {
        println!(
            "  max bytes  : {}  (current num bytes: {} bytes)",
            format_size(q.max_bytes),
            q.bytes
        );
    }
    Ok(())
}

fn caps_pairs(caps: &[String]) -> CmdResult<Vec<(String, String)>> {
    if !caps.len().is_multiple_of(2) {
        return Err(cerr(
            Errno::EINVAL,
            "caps must be given as SERVICE CAPS pairs (e.g. mon 'allow r')",
        ));
    }
    Ok(caps
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect())
}

fn entity(s: &str) -> CmdResult<String> {
    EntityName::parse(s)
        .map(|e| e.to_string())
        .map_err(|e| cerr(Errno::EINVAL, format!("bad entity name '{s}': {e}")))
}

fn auth_json(entries: &[quarry_monc::AuthEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({"entity": e.entity, "key": e.key, "caps": e.caps}))
            .collect(),
    )
}

async fn auth(ctx: &Ctx, cmd: AuthCmd) -> CmdResult {
    match cmd {
        AuthCmd::GetOrCreate { entity: e, caps } => {
            let e = entity(&e)?;
            let caps = caps_pairs(&caps)?;
            let r = ctx
                .command(
                    "auth get-or-create",
                    MonCommand::AuthGetOrCreate { entity: e, caps },
                )
                .await?;
            if let MonReply::Auth(entries) = r {
                if ctx.json() {
                    ctx.print_json(&auth_json(&entries));
                } else {
                    for a in &entries {
                        println!("[{}]\n\tkey = {}", a.entity, a.key);
                    }
                }
            }
        }
        AuthCmd::Get { entity: e } => {
            let e = entity(&e)?;
            let r = ctx
                .command("auth get", MonCommand::AuthGet { entity: e.clone() })
                .await?;
            if let MonReply::Auth(entries) = r {
                if ctx.json() {
                    ctx.print_json(&auth_json(&entries));
                } else {
                    for a in &entries {
                        print!("{}", a.keyring_section());
                    }
                    eprintln!("exported keyring for {e}");
                }
            }
        }
        AuthCmd::Ls => {
            let r = ctx.command("auth ls", MonCommand::AuthList).await?;
            if let MonReply::Auth(entries) = r {
                if ctx.json() {
                    ctx.print_json(&json!({"auth_dump": auth_json(&entries)}));
                } else {
                    eprintln!("installed auth entries:\n");
                    for a in &entries {
                        println!("{}\n\tkey: {}", a.entity, a.key);
                        for (svc, c) in &a.caps {
                            println!("\tcaps: [{svc}] {c}");
                        }
                    }
                }
            }
        }
        AuthCmd::Del { entity: e } => {
            let e = entity(&e)?;
            ctx.command("auth del", MonCommand::AuthDel { entity: e })
                .await?;
            eprintln!("updated");
        }
        AuthCmd::Caps { entity: e, caps } => {
            let e = entity(&e)?;
            let caps = caps_pairs(&caps)?;
            ctx.command(
                "auth caps",
                MonCommand::AuthCaps {
                    entity: e.clone(),
                    caps,
                },
            )
            .await?;
            eprintln!("updated caps for {e}");
        }
        AuthCmd::PrintKey { entity: e } => {
            let e = entity(&e)?;
            let r = ctx
                .command("auth print-key", MonCommand::AuthPrintKey { entity: e })
                .await?;
            if let MonReply::Key(k) = r {
                println!("{k}");
            }
        }
    }
    Ok(())
}

async fn mon_stat(ctx: &Ctx) -> CmdResult {
    let monc = ctx.monc("mon stat")?;
    let st = match monc.command(MonCommand::Status).await.map_err(mon_err)? {
        MonReply::Status(s) => s,
        other => return Err(cerr(Errno::EIO, format!("unexpected reply {other:?}"))),
    };
    let leader = st.leader.clone().unwrap_or_default();
    if ctx.json() {
        ctx.print_json(&json!({"epoch": st.epoch, "num_mons": st.mons.len(),
            "mons": st.mons.iter().map(|m| json!({"name": m.name, "rank": m.rank, "addr": m.addr})).collect::<Vec<_>>(),
            "leader": leader, "quorum": st.quorum}));
        return Ok(());
    }
    let mons: Vec<String> = st
        .mons
        .iter()
        .map(|m| format!("{}={}", m.name, m.addr))
        .collect();
    let rank = |n: &str| st.mons.iter().find(|m| m.name == n).map_or(0, |m| m.rank);
    let quorum: Vec<String> = st
        .quorum
        .iter()
        .map(|q| format!("{} {q}", rank(q)))
        .collect();
    println!(
        "e{}: {} mons at {{{}}}, election epoch {}, leader {} {}, quorum {}",
        st.epoch,
        st.mons.len(),
        mons.join(","),
        st.epoch,
        rank(&leader),
        leader,
        quorum.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_values_parse_as_cephs() {
        assert_eq!(quota_value("max_bytes", "10G").expect("size"), 10 << 30);
        assert_eq!(quota_value("max_bytes", "100").expect("bytes"), 100);
        assert_eq!(quota_value("max_bytes", "0").expect("none"), 0);
        assert_eq!(quota_value("max_objects", "1000").expect("count"), 1000);
        assert_eq!(quota_value("max_objects", "10k").expect("si"), 10_000);
        assert_eq!(quota_value("max_objects", "2M").expect("si"), 2_000_000);
        for (field, bad) in [
            ("max_bytes", "-1"),
            ("max_bytes", "lots"),
            ("max_bytes", "10KB"),
            ("max_objects", "ten"),
            ("max_objects", "1.5k"),
            ("max_objects", "-3"),
            ("max_objects", "20000P"),
            ("max_objects", ""),
        ] {
            let e = quota_value(field, bad).expect_err(bad);
            assert_eq!(e.code, Errno::EINVAL.code(), "{bad}");
            assert!(
                e.lines[0].starts_with(&format!("Error EINVAL: error parsing value '{bad}'")),
                "{:?}",
                e.lines
            );
        }
        let e = quota_value("max_files", "1").expect_err("field");
        assert_eq!(e.code, Errno::EINVAL.code());
    }

    #[test]
    fn object_counts_print_as_cephs_si() {
        assert_eq!(si_count(0), "0");
        assert_eq!(si_count(10), "10");
        assert_eq!(si_count(1000), "1k");
        assert_eq!(si_count(1500), "1500");
        assert_eq!(si_count(2_000_000), "2M");
        assert_eq!(si_count(3_000_000_000_000), "3T");
    }
}

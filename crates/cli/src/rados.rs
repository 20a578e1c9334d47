//! `quarry rados …` (and `rados …` through a symlink): the object-level
//! commands an operator uses to look inside pools (`lspools`, `ls`, `stat`,
//! `get`, `put`, xattrs, omap, watchers) and to follow up on scrub errors
//! (`list-inconsistent-pg`, `list-inconsistent-obj`), with Ceph's `rados`
//! syntax and output forms: errors on stderr in Ceph's words, exit code 1.
//!
//! Options may come anywhere on the line, as with Ceph's tool, so the
//! arguments are parsed here rather than by clap.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use quarry_common::Errno;
use quarry_monc::{MonCommand, MonReply};
use quarry_rados::{ObjectId, Op, OpOutput, OpRequest, PoolId, Rados, RadosError};
use serde_json::{json, Value};

use crate::ceph::CephFormat;

#[path = "rados_bench.rs"]
mod bench;
use crate::rbd::{connect_with, iso_utc, print_json, Align, Table};

/// Bytes per read or write op of `get` and `put` (Ceph's default op size).
const OP_SIZE: usize = 4 << 20;

/// Omap entries fetched per request by `listomapkeys`/`listomapvals`.
const OMAP_PAGE: u64 = 1024;

/// `rados` and its arguments (parsed by [`parse`]).
#[derive(Args, Debug)]
#[command(
    about = "Work with pools and objects (Ceph's rados syntax)",
    disable_help_flag = true
)]
pub struct RadosArgs {
    /// Options and the command with its arguments (`rados --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    raw: Vec<String>,
}

const USAGE: &str = "usage: rados [options] <command> [args]
POOL COMMANDS
   lspools                          list pools
   df                               show per-pool and total usage
   ls                               list objects in pool (-p)
OBJECT COMMANDS (-p POOL)
   get <obj-name> <outfile>         fetch object ('-': stdout)
   put <obj-name> <infile> [--offset offset]
                                    write object ('-': stdin)
   truncate <obj-name> length       truncate object
   create <obj-name>                create object
   rm <obj-name> ...                remove object(s)
   stat <obj-name>                  stat the named object
   listxattr <obj-name>
   getxattr <obj-name> attr
   setxattr <obj-name> attr [val]   (value from stdin without val)
   rmxattr <obj-name> attr
   listomapkeys <obj-name>          list the keys in the object map
   listomapvals <obj-name>          list the keys and vals in the object map
   getomapval <obj-name> <key> [file]
   setomapval <obj-name> <key> [val]
   rmomapkey <obj-name> <key>
   clearomap <obj-name> [obj-name2 ...]
   listwatchers <obj-name>          list the watchers of this object
BENCHMARK (-p POOL)
   bench <seconds> write|seq|rand [-t concurrent_operations] [-b op_size]
                                    [--no-cleanup] [--run-name run_name]
                                    write: objects of op_size (default 4 MiB);
                                    seq/rand: read what write --no-cleanup left
   cleanup [--run-name run_name]    remove what write --no-cleanup left
SCRUB AND REPAIR
   list-inconsistent-pg <pool>      list inconsistent PGs in given pool
   list-inconsistent-obj <pgid>     list inconsistent objects in given PG
GLOBAL OPTIONS
   -p pool, --pool=pool             select given pool by name
   -N namespace, --namespace=namespace
   --all                            ls: objects of all namespaces
   -f plain|json|json-pretty, --format=...
   -c conf, --id id, -n name, -k keyring, -m mon-host, --cluster name
";

/// The parsed command line.
#[derive(Debug, Default)]
struct Opts {
    pool: Option<String>,
    namespace: Option<String>,
    all: bool,
    format: Option<CephFormat>,
    offset: Option<u64>,
    /// `bench`: ops in flight (`-t`).
    concurrency: Option<usize>,
    /// `bench write`: object size (`-b`).
    block_size: Option<u64>,
    /// `bench write`: keep the objects (and their metadata) for `seq`/`rand`.
    no_cleanup: bool,
    /// `bench`/`cleanup`: the metadata object's name.
    run_name: Option<String>,
    help: bool,
    g: crate::rbd::Global,
    /// The command and its arguments.
    args: Vec<String>,
}

/// A failed command: what to print on stderr, exit 1 (as Ceph's tool).
#[derive(Debug)]
struct Fail(Vec<String>);

type R<T = ()> = Result<T, Fail>;

fn fail(msg: impl Into<String>) -> Fail {
    Fail(vec![msg.into()])
}

/// `what: (2) No such file or directory`.
fn ferr(what: impl std::fmt::Display, e: &RadosError) -> Fail {
    fail(format!("{what}: {}", e.errno))
}

/// Parse options (anywhere on the line, `--opt value` or `--opt=value`)
/// and the positional command line.
fn parse(raw: &[String]) -> R<Opts> {
    let mut o = Opts::default();
    let mut it = raw.iter();
    let mut only_args = false;
    while let Some(a) = it.next() {
        if only_args || a == "-" || !a.starts_with('-') {
            o.args.push(a.clone());
            continue;
        }
        if a == "--" {
            only_args = true;
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> R<String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(fail(format!("option {what} requires an argument"))),
            }
        };
        match name {
            "-p" | "--pool" => o.pool = Some(value(name)?),
            "-N" | "--namespace" => o.namespace = Some(value(name)?),
            "--all" => o.all = true,
            "--default" => o.namespace = Some(String::new()),
            "-f" | "--format" => {
                o.format = Some(match value(name)?.as_str() {
                    "plain" => CephFormat::Plain,
                    "json" => CephFormat::Json,
                    "json-pretty" => CephFormat::JsonPretty,
                    v => return Err(fail(format!("unrecognized format: {v}"))),
                })
            }
            "--offset" => {
                let v = value(name)?;
                o.offset = Some(
                    v.parse()
                        .map_err(|_| fail(format!("Invalid value for offset: '{v}'")))?,
                );
            }
            "-t" | "--concurrent-ios" => {
                let v = value(name)?;
                o.concurrency = Some(
                    v.parse()
                        .map_err(|_| fail(format!("Invalid value for concurrent-ios: '{v}'")))?,
                );
            }
            "-b" | "--block-size" => {
                let v = value(name)?;
                o.block_size = Some(
                    quarry_common::size::parse_size(&v, quarry_common::size::SizeUnit::Bytes)
                        .map_err(|e| fail(format!("Invalid value for block-size: {e}")))?,
                );
            }
            "--no-cleanup" => o.no_cleanup = true,
            "--run-name" => o.run_name = Some(value(name)?),
            "-c" | "--conf" => o.g.conf = Some(value(name)?),
            "--id" | "--user" => o.g.id = Some(value(name)?),
            "-n" | "--name" => o.g.name = Some(value(name)?),
            "-k" | "--keyring" => o.g.keyring = Some(value(name)?),
            "-m" | "--mon-host" | "--mon_host" => o.g.mon_host = Some(value(name)?),
            "--cluster" => o.g.cluster = Some(value(name)?),
            "-h" | "--help" => o.help = true,
            _ => return Err(fail(format!("unrecognized option '{a}'"))),
        }
    }
    Ok(o)
}

/// Run `rados`; returns the process exit code.
pub fn run(a: RadosArgs) -> i32 {
    let o = match parse(&a.raw) {
        Ok(o) => o,
        Err(Fail(lines)) => {
            for l in lines {
                eprintln!("rados: {l}");
            }
            eprint!("{USAGE}");
            return 1;
        }
    };
    if o.help {
        print!("{USAGE}");
        return 0;
    }
    if o.args.is_empty() {
        eprintln!("rados: you must give an action. Try --help");
        return 1;
    }
    let Some(rt) = crate::tools::runtime("rados") else {
        return 1;
    };
    match rt.block_on(dispatch(o)) {
        Ok(()) => 0,
        Err(Fail(lines)) => {
            for l in lines {
                eprintln!("{l}");
            }
            1
        }
    }
}

/// The connection and the options, shared by every command.
struct Ctx {
    o: Opts,
    conn: quarry_connect::Connection,
}

impl Ctx {
    fn rados(&self) -> &Arc<dyn Rados> {
        &self.conn.rados
    }

    fn json(&self) -> Option<bool> {
        match self.o.format {
            Some(CephFormat::Json) => Some(false),
            Some(CephFormat::JsonPretty) => Some(true),
            _ => None,
        }
    }

    /// The `-p` pool, opened: its name and id.
    async fn pool(&self) -> R<(String, PoolId)> {
        let Some(name) = self.o.pool.clone() else {
            return Err(fail("error: pool name was not specified (use -p <pool>)"));
        };
        match self.rados().pool_lookup(&name).await {
            Ok(id) => Ok((name, id)),
            Err(e) => Err(ferr(format_args!("error opening pool {name}"), &e)),
        }
    }

    /// `pool/obj` (`pool/ns/obj` in a namespace), as messages name objects.
    fn display(&self, pool: &str, obj: &str) -> String {
        match self.o.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => format!("{pool}/{ns}/{obj}"),
            _ => format!("{pool}/{obj}"),
        }
    }

    fn oid(&self, pool: PoolId, name: &str) -> ObjectId {
        ObjectId::with_namespace(
            pool,
            self.o.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    }

    async fn op(&self, oid: ObjectId, ops: Vec<Op>) -> Result<Vec<OpOutput>, RadosError> {
        let mut req = OpRequest::new(oid);
        req.ops = ops;
        Ok(self.rados().operate(req).await?.outputs)
    }
}

/// The `n`th positional argument (after the command), or usage.
fn arg<'a>(args: &'a [String], n: usize, what: &str) -> R<&'a str> {
    args.get(n)
        .map(String::as_str)
        .ok_or_else(|| fail(format!("rados {}: missing <{what}>", args[0])))
}

async fn dispatch(o: Opts) -> R {
    let req = o.g.config_request().map_err(|e| Fail(e.lines.clone()))?;
    let conn = connect_with(&req, "rados")
        .await
        .map_err(|e| Fail(e.lines.iter().map(|l| format!("rados: {l}")).collect()))?;
    let ctx = Ctx { o, conn };
    let args = ctx.o.args.clone();
    match args[0].as_str() {
        "lspools" => lspools(&ctx).await,
        "df" => df(&ctx).await,
        "ls" => ls(&ctx).await,
        "stat" => stat(&ctx, arg(&args, 1, "obj-name")?).await,
        "get" => get(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "outfile")?).await,
        "put" => put(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "infile")?).await,
        "truncate" => truncate(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "length")?).await,
        "create" => create(&ctx, arg(&args, 1, "obj-name")?).await,
        "rm" => {
            arg(&args, 1, "obj-name")?;
            rm(&ctx, &args[1..]).await
        }
        "listxattr" => listxattr(&ctx, arg(&args, 1, "obj-name")?).await,
        "getxattr" => getxattr(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "attr")?).await,
        "setxattr" => {
            let val = args.get(3).map(|v| Bytes::from(v.clone().into_bytes()));
            setxattr(
                &ctx,
                arg(&args, 1, "obj-name")?,
                arg(&args, 2, "attr")?,
                val,
            )
            .await
        }
        "rmxattr" => rmxattr(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "attr")?).await,
        "listomapkeys" => listomap(&ctx, arg(&args, 1, "obj-name")?, false).await,
        "listomapvals" => listomap(&ctx, arg(&args, 1, "obj-name")?, true).await,
        "getomapval" => {
            let out = args.get(3).map(String::as_str);
            getomapval(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "key")?, out).await
        }
        "setomapval" => {
            let val = args.get(3).map(|v| Bytes::from(v.clone().into_bytes()));
            setomapval(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "key")?, val).await
        }
        "rmomapkey" => rmomapkey(&ctx, arg(&args, 1, "obj-name")?, arg(&args, 2, "key")?).await,
        "clearomap" => {
            arg(&args, 1, "obj-name")?;
            clearomap(&ctx, &args[1..]).await
        }
        "listwatchers" => listwatchers(&ctx, arg(&args, 1, "obj-name")?).await,
        "bench" => {
            bench::bench(
                &ctx,
                arg(&args, 1, "seconds")?,
                arg(&args, 2, "write|seq|rand")?,
            )
            .await
        }
        "cleanup" => bench::cleanup(&ctx).await,
        "list-inconsistent-pg" => list_inconsistent_pg(&ctx, arg(&args, 1, "pool")?).await,
        "list-inconsistent-obj" => list_inconsistent_obj(&ctx, arg(&args, 1, "pgid")?).await,
        other => Err(fail(format!(
            "rados: unrecognized command {other}; try --help"
        ))),
    }
}

async fn lspools(ctx: &Ctx) -> R {
    let pools = ctx
        .rados()
        .pool_list()
        .await
        .map_err(|e| ferr("error listing pools", &e))?;
    let mut out = String::new();
    for p in pools {
        out += &p.name;
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

async fn df(ctx: &Ctx) -> R {
    let pools = ctx
        .rados()
        .pool_list()
        .await
        .map_err(|e| ferr("error listing pools", &e))?;
    let map = ctx.conn.monc.as_ref().map(|m| m.map());
    let mut rows = Vec::new();
    for p in pools {
        if ctx.o.pool.as_deref().is_some_and(|want| want != p.name) {
            continue;
        }
        let st = ctx
            .rados()
            .pool_stat(p.id)
            .await
            .map_err(|e| ferr("error fetching pool stats", &e))?;
        let size = map
            .as_ref()
            .and_then(|m| m.pools.get(&p.id))
            .map_or(1, |d| u64::from(d.size.max(1)));
        rows.push((p.name, p.id, st.num_bytes, st.num_objects, size));
    }
    let (objects, used): (u64, u64) = rows
        .iter()
        .fold((0, 0), |(o, u), r| (o + r.3, u + r.2 * r.4));
    if let Some(pretty) = ctx.json() {
        let v: Vec<Value> = rows
            .iter()
            .map(|(name, id, bytes, objs, size)| {
                json!({"name": name, "id": id, "size_bytes": bytes, "size_kb": bytes.div_ceil(1024),
                    "num_objects": objs, "num_object_clones": 0, "num_object_copies": objs * size,
                    "num_objects_missing_on_primary": 0, "num_objects_unfound": 0,
                    "num_objects_degraded": 0})
            })
            .collect();
        print_json(
            &json!({"pools": v, "total_objects": objects, "total_used": used.div_ceil(1024)}),
            pretty,
        );
        return Ok(());
    }
    let r = Align::Right;
    let mut t = Table::new(&[
        ("POOL_NAME", Align::Left),
        ("USED", r),
        ("OBJECTS", r),
        ("CLONES", r),
        ("COPIES", r),
        ("MISSING_ON_PRIMARY", r),
        ("UNFOUND", r),
        ("DEGRADED", r),
    ]);
    for (name, _, bytes, objs, size) in &rows {
        t.row(vec![
            name.clone(),
            byte_u(*bytes),
            objs.to_string(),
            "0".into(),
            (objs * size).to_string(),
            "0".into(),
            "0".into(),
            "0".into(),
        ]);
    }
    print!("{}", t.render());
    println!();
    println!("total_objects    {objects}");
    println!("total_used       {}", byte_u(used));
    Ok(())
}

/// Ceph's `byte_u_t` form: `0 B`, `4 KiB`, `1.5 MiB`.
fn byte_u(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    let mut v = n as f64;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{} {}", v as u64, UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

async fn ls(ctx: &Ctx) -> R {
    let (_, pool) = ctx.pool().await?;
    let ns = if ctx.o.all && ctx.o.namespace.is_none() {
        None
    } else {
        Some(ctx.o.namespace.clone().unwrap_or_default())
    };
    let objs = ctx
        .rados()
        .list_objects(pool, ns.as_deref())
        .await
        .map_err(|e| ferr("error listing objects", &e))?;
    if let Some(pretty) = ctx.json() {
        let v: Vec<Value> = objs
            .iter()
            .map(|o| json!({"namespace": o.namespace, "name": o.name}))
            .collect();
        print_json(&Value::Array(v), pretty);
        return Ok(());
    }
    let mut out = String::new();
    for o in objs {
        if ns.is_none() {
            out += &o.namespace;
            out.push('\t');
        }
        out += &o.name;
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

async fn stat(ctx: &Ctx, obj: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let out = ctx
        .op(ctx.oid(pool, obj), vec![Op::Stat])
        .await
        .map_err(|e| {
            ferr(
                format_args!(" error stat-ing {}", ctx.display(&pname, obj)),
                &e,
            )
        })?;
    match out.first() {
        Some(OpOutput::Stat(s)) => {
            println!(
                "{} mtime {}, size {}",
                ctx.display(&pname, obj),
                iso_utc(s.mtime_ns / 1_000_000_000),
                s.size
            );
            Ok(())
        }
        _ => Err(fail("stat: unexpected reply")),
    }
}

/// Open `path` for writing (`-`: stdout).
fn out_file(path: &str) -> R<Box<dyn Write>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout().lock()));
    }
    std::fs::File::create(path)
        .map(|f| Box::new(f) as Box<dyn Write>)
        .map_err(|e| fail(format!("failed to open file: {}", io_errno(&e))))
}

/// Ceph's `(2) No such file or directory` form of an I/O error.
fn io_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_code(n).to_string(),
        None => e.to_string(),
    }
}

async fn get(ctx: &Ctx, obj: &str, path: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let what = || format!("error getting {}", ctx.display(&pname, obj));
    // Fail on a missing object before creating the output file.
    let mut off = 0u64;
    let mut first = Some(
        read_chunk(ctx, pool, obj, 0)
            .await
            .map_err(|e| ferr(what(), &e))?,
    );
    let mut f = out_file(path)?;
    loop {
        let chunk = match first.take() {
            Some(c) => c,
            None => read_chunk(ctx, pool, obj, off)
                .await
                .map_err(|e| ferr(what(), &e))?,
        };
        f.write_all(&chunk)
            .map_err(|e| fail(format!("error writing to file: {}", io_errno(&e))))?;
        if chunk.len() < OP_SIZE {
            break;
        }
        off += chunk.len() as u64;
    }
    f.flush()
        .map_err(|e| fail(format!("error writing to file: {}", io_errno(&e))))
}

async fn read_chunk(ctx: &Ctx, pool: PoolId, obj: &str, off: u64) -> Result<Bytes, RadosError> {
    let out = ctx
        .op(
            ctx.oid(pool, obj),
            vec![Op::Read {
                off,
                len: OP_SIZE as u64,
            }],
        )
        .await?;
    match out.into_iter().next() {
        Some(OpOutput::Data(d)) => Ok(d),
        _ => Err(RadosError::new(Errno::EIO, "unexpected read reply")),
    }
}

async fn put(ctx: &Ctx, obj: &str, path: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let mut input: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| fail(format!("error reading input file {path}: {}", io_errno(&e))))?,
        )
    };
    let what = || format!("error putting {}", ctx.display(&pname, obj));
    let start = ctx.o.offset.unwrap_or(0);
    let mut off = start;
    loop {
        let mut buf = Vec::with_capacity(OP_SIZE);
        (&mut input)
            .take(OP_SIZE as u64)
            .read_to_end(&mut buf)
            .map_err(|e| fail(format!("error reading input file {path}: {}", io_errno(&e))))?;
        let n = buf.len() as u64;
        // Without --offset the object is replaced (its first chunk written
        // whole); with it, the bytes land at that offset.
        let op = if off == start && ctx.o.offset.is_none() {
            Op::WriteFull(Bytes::from(buf))
        } else if n == 0 && off == start {
            Op::Create { exclusive: false }
        } else if n == 0 {
            break;
        } else {
            Op::Write {
                off,
                data: Bytes::from(buf),
            }
        };
        ctx.op(ctx.oid(pool, obj), vec![op])
            .await
            .map_err(|e| ferr(what(), &e))?;
        off += n;
        if n < OP_SIZE as u64 {
            break;
        }
    }
    Ok(())
}

async fn truncate(ctx: &Ctx, obj: &str, len: &str) -> R {
    let (_, pool) = ctx.pool().await?;
    let size: u64 = len
        .parse()
        .map_err(|_| fail(format!("Invalid value for size: '{len}'")))?;
    ctx.op(
        ctx.oid(pool, obj),
        vec![Op::AssertExists, Op::Truncate(size)],
    )
    .await
    .map_err(|e| ferr(format_args!("error truncating oid {obj} to {size}"), &e))?;
    Ok(())
}

async fn create(ctx: &Ctx, obj: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    ctx.op(ctx.oid(pool, obj), vec![Op::Create { exclusive: true }])
        .await
        .map_err(|e| {
            ferr(
                format_args!("error creating {}", ctx.display(&pname, obj)),
                &e,
            )
        })?;
    Ok(())
}

async fn rm(ctx: &Ctx, objs: &[String]) -> R {
    let (pname, pool) = ctx.pool().await?;
    for obj in objs {
        ctx.op(ctx.oid(pool, obj), vec![Op::Remove])
            .await
            .map_err(|e| {
                let name = match ctx.o.namespace.as_deref() {
                    Some(ns) if !ns.is_empty() => format!("{ns}/{obj}"),
                    _ => obj.clone(),
                };
                ferr(format_args!("error removing {pname}>{name}"), &e)
            })?;
    }
    Ok(())
}

async fn listxattr(ctx: &Ctx, obj: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let out = ctx
        .op(ctx.oid(pool, obj), vec![Op::GetXattrs])
        .await
        .map_err(|e| {
            ferr(
                format_args!("error getting xattr set {}", ctx.display(&pname, obj)),
                &e,
            )
        })?;
    if let Some(OpOutput::Xattrs(x)) = out.first() {
        let mut s = String::new();
        for k in x.keys() {
            s += k;
            s.push('\n');
        }
        print!("{s}");
    }
    Ok(())
}

async fn getxattr(ctx: &Ctx, obj: &str, name: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let out = ctx
        .op(ctx.oid(pool, obj), vec![Op::GetXattr(name.to_string())])
        .await
        .map_err(|e| {
            ferr(
                format_args!("error getting xattr {}/{name}", ctx.display(&pname, obj)),
                &e,
            )
        })?;
    if let Some(OpOutput::Data(d)) = out.first() {
        let mut so = std::io::stdout().lock();
        so.write_all(d)
            .and_then(|_| so.flush())
            .map_err(|e| fail(format!("error writing to stdout: {}", io_errno(&e))))?;
    }
    Ok(())
}

/// A value given on the command line, or all of stdin.
fn value_or_stdin(v: Option<Bytes>) -> R<Bytes> {
    match v {
        Some(v) => Ok(v),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| fail(format!("error reading stdin: {}", io_errno(&e))))?;
            Ok(Bytes::from(buf))
        }
    }
}

async fn setxattr(ctx: &Ctx, obj: &str, name: &str, val: Option<Bytes>) -> R {
    let (pname, pool) = ctx.pool().await?;
    let val = value_or_stdin(val)?;
    ctx.op(
        ctx.oid(pool, obj),
        vec![Op::SetXattr(name.to_string(), val)],
    )
    .await
    .map_err(|e| {
        ferr(
            format_args!("error setting xattr {}/{name}", ctx.display(&pname, obj)),
            &e,
        )
    })?;
    Ok(())
}

async fn rmxattr(ctx: &Ctx, obj: &str, name: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    ctx.op(ctx.oid(pool, obj), vec![Op::RmXattr(name.to_string())])
        .await
        .map_err(|e| {
            ferr(
                format_args!("error removing xattr {}/{name}", ctx.display(&pname, obj)),
                &e,
            )
        })?;
    Ok(())
}

/// Ceph's hexdump of a value: 16 bytes a line (`00000000  61 62 ...
/// |ab|`), runs of identical lines as `*`, then the length.
fn hexdump(b: &[u8]) -> String {
    if b.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let mut prev: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in b.chunks(16).enumerate() {
        let o = i * 16;
        if line.len() == 16 && o + 16 < b.len() && prev == Some(line) {
            if !starred {
                s += "*\n";
                starred = true;
            }
            continue;
        }
        starred = false;
        prev = Some(line);
        s += &format!("{o:08x} ");
        for j in 0..16 {
            if j == 8 {
                s.push(' ');
            }
            match line.get(j) {
                Some(c) => s += &format!(" {c:02x}"),
                None => s += "   ",
            }
        }
        s += "  |";
        for &c in line {
            s.push(if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            });
        }
        s += "|\n";
    }
    s += &format!("{:08x}\n", b.len());
    s
}

async fn listomap(ctx: &Ctx, obj: &str, vals: bool) -> R {
    let (pname, pool) = ctx.pool().await?;
    let mut after = String::new();
    let mut out = String::new();
    loop {
        let res = ctx
            .op(
                ctx.oid(pool, obj),
                vec![Op::OmapGetVals {
                    start_after: after.clone(),
                    prefix: String::new(),
                    max: OMAP_PAGE,
                }],
            )
            .await
            .map_err(|e| {
                let what = if vals { "keys" } else { "key set" };
                ferr(
                    format_args!("error getting omap {what} {}", ctx.display(&pname, obj)),
                    &e,
                )
            })?;
        let Some(OpOutput::Omap(m, more)) = res.into_iter().next() else {
            return Err(fail("omap: unexpected reply"));
        };
        for (k, v) in &m {
            if !vals {
                out += k;
                out.push('\n');
                continue;
            }
            if k.bytes().all(|c| c.is_ascii_graphic() || c == b' ') {
                out += k;
            } else {
                out += &format!("key ({} bytes):\n{}", k.len(), hexdump(k.as_bytes()));
            }
            out += &format!("\nvalue ({} bytes) :\n{}\n", v.len(), hexdump(v));
        }
        match m.keys().next_back() {
            Some(last) if more => after = last.clone(),
            _ => break,
        }
    }
    print!("{out}");
    Ok(())
}

async fn getomapval(ctx: &Ctx, obj: &str, key: &str, outfile: Option<&str>) -> R {
    let (pname, pool) = ctx.pool().await?;
    let res = ctx
        .op(
            ctx.oid(pool, obj),
            vec![Op::OmapGetValsByKeys(vec![key.to_string()])],
        )
        .await
        .map_err(|e| {
            ferr(
                format_args!(
                    "error getting omap value {}/{key}",
                    ctx.display(&pname, obj)
                ),
                &e,
            )
        })?;
    let Some(OpOutput::Omap(m, _)) = res.into_iter().next() else {
        return Err(fail("omap: unexpected reply"));
    };
    let Some(v) = m.get(key) else {
        // Ceph's tool says this on stdout, and fails.
        println!("No such key: {}/{key}", ctx.display(&pname, obj));
        return Err(Fail(Vec::new()));
    };
    match outfile {
        Some(path) => {
            eprintln!("Writing to {path}");
            let mut f = out_file(path)?;
            f.write_all(v)
                .and_then(|_| f.flush())
                .map_err(|e| fail(format!("error writing to file: {}", io_errno(&e))))
        }
        None => {
            print!("value ({} bytes) :\n{}\n", v.len(), hexdump(v));
            Ok(())
        }
    }
}

async fn setomapval(ctx: &Ctx, obj: &str, key: &str, val: Option<Bytes>) -> R {
    let (pname, pool) = ctx.pool().await?;
    let val = value_or_stdin(val)?;
    let mut m = std::collections::BTreeMap::new();
    m.insert(key.to_string(), val);
    ctx.op(ctx.oid(pool, obj), vec![Op::OmapSetVals(m)])
        .await
        .map_err(|e| {
            ferr(
                format_args!(
                    "error setting omap value {}/{key}",
                    ctx.display(&pname, obj)
                ),
                &e,
            )
        })?;
    Ok(())
}

async fn rmomapkey(ctx: &Ctx, obj: &str, key: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    ctx.op(
        ctx.oid(pool, obj),
        vec![Op::AssertExists, Op::OmapRmKeys(vec![key.to_string()])],
    )
    .await
    .map_err(|e| {
        ferr(
            format_args!("error removing omap key {}/{key}", ctx.display(&pname, obj)),
            &e,
        )
    })?;
    Ok(())
}

async fn clearomap(ctx: &Ctx, objs: &[String]) -> R {
    let (pname, pool) = ctx.pool().await?;
    for obj in objs {
        ctx.op(ctx.oid(pool, obj), vec![Op::AssertExists, Op::OmapClear])
            .await
            .map_err(|e| {
                ferr(
                    format_args!("error clearing omap keys {}", ctx.display(&pname, obj)),
                    &e,
                )
            })?;
    }
    Ok(())
}

async fn listwatchers(ctx: &Ctx, obj: &str) -> R {
    let (pname, pool) = ctx.pool().await?;
    let failed = |e: &RadosError| {
        ferr(
            format_args!("error listing watchers {}", ctx.display(&pname, obj)),
            e,
        )
    };
    let ws = ctx
        .rados()
        .list_watchers(&ctx.oid(pool, obj))
        .await
        .map_err(|e| failed(&e))?;
    if ws.is_empty() {
        // No watchers, or no object: Ceph says ENOENT for the latter.
        ctx.op(ctx.oid(pool, obj), vec![Op::Stat])
            .await
            .map_err(|e| failed(&e))?;
    }
    let mut s = String::new();
    for w in ws {
        s += &format!(
            "watcher={} client.{} cookie={}\n",
            w.addr, w.client, w.cookie
        );
    }
    print!("{s}");
    Ok(())
}

async fn list_inconsistent_pg(ctx: &Ctx, pool: &str) -> R {
    let Some(monc) = &ctx.conn.monc else {
        return Err(fail(
            "list-inconsistent-pg needs a cluster (the embedded backend has no OSDs)",
        ));
    };
    let id = ctx
        .rados()
        .pool_lookup(pool)
        .await
        .map_err(|_| fail(format!("pool \"{pool}\" not found")))?;
    let st = match monc.command(MonCommand::Status).await {
        Ok(MonReply::Status(s)) => s,
        Ok(other) => return Err(fail(format!("unexpected reply {other:?}"))),
        Err(e) => return Err(fail(format!("error getting the PG states: {e}"))),
    };
    let pgs: Vec<Value> = st
        .inconsistent
        .iter()
        .filter(|e| e.pg.pool == id)
        .map(|e| Value::String(e.pg.to_string()))
        .collect();
    print_json(&Value::Array(pgs), ctx.json().unwrap_or(false));
    Ok(())
}

async fn list_inconsistent_obj(ctx: &Ctx, pgid: &str) -> R {
    let Some(pg) = crate::ceph::parse_pgid(pgid) else {
        return Err(fail(format!("Invalid pgid {pgid}")));
    };
    let Some(cluster) = &ctx.conn.cluster else {
        return Err(fail(
            "list-inconsistent-obj needs a cluster (the embedded backend has no OSDs)",
        ));
    };
    let r = match cluster.scrub_result(pg).await {
        Ok(r) => r,
        Err(e) if e.errno == Errno::ENOENT => {
            return Err(Fail(vec![
                format!("No scrub information available for pg {pg}"),
                format!("error {}: {}", Errno::ENOENT.code(), Errno::ENOENT),
            ]))
        }
        Err(e) => {
            return Err(ferr(
                format_args!("error getting the scrub result of pg {pg}"),
                &e,
            ))
        }
    };
    let primary = r.acting.first().copied();
    let objs: Vec<Value> = r
        .inconsistent
        .iter()
        .map(|o| {
            let mut union: Vec<&str> = o
                .copies
                .iter()
                .flat_map(|c| c.errors.iter().map(String::as_str))
                .collect();
            union.sort_unstable();
            union.dedup();
            let errors: Vec<&str> = union
                .iter()
                .copied()
                .filter(|e| *e == "digest_mismatch")
                .collect();
            json!({
                "object": {"name": o.name, "nspace": o.namespace, "locator": "", "snap": "head"},
                "errors": errors,
                "union_shard_errors": union,
                "selected_object_info": {"osd": o.auth},
                "shards": o.copies.iter().map(|c| {
                    let mut v = json!({"osd": c.osd, "primary": Some(c.osd) == primary,
                        "errors": c.errors});
                    if let Some(d) = c.digest {
                        v["object_digest"] = json!(format!("0x{d:08x}"));
                    }
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    print_json(
        &json!({"epoch": r.epoch, "inconsistents": objs}),
        ctx.json().unwrap_or(false),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> R<Opts> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_anywhere_and_in_both_forms() {
        let o = p(&["ls", "-p", "rbd", "--all"])
            .map_err(|f| f.0)
            .expect("parse");
        assert_eq!(o.args, ["ls"]);
        assert_eq!(o.pool.as_deref(), Some("rbd"));
        assert!(o.all);
        let o = p(&[
            "--pool=data",
            "-N",
            "ns1",
            "get",
            "obj",
            "-",
            "--format=json-pretty",
        ])
        .map_err(|f| f.0)
        .expect("parse");
        assert_eq!(o.args, ["get", "obj", "-"]);
        assert_eq!(o.namespace.as_deref(), Some("ns1"));
        assert_eq!(o.format, Some(CephFormat::JsonPretty));
        let o = p(&["put", "o", "f", "--offset", "4096", "--", "-x"])
            .map_err(|f| f.0)
            .expect("parse");
        assert_eq!(o.offset, Some(4096));
        assert_eq!(o.args, ["put", "o", "f", "-x"]);
    }

    #[test]
    fn bad_options_are_named() {
        let e = p(&["ls", "--bogus"]).expect_err("unknown option");
        assert_eq!(e.0, ["unrecognized option '--bogus'"]);
        let e = p(&["ls", "-p"]).expect_err("missing value");
        assert_eq!(e.0, ["option -p requires an argument"]);
        let e = p(&["put", "o", "f", "--offset", "x"]).expect_err("bad offset");
        assert_eq!(e.0, ["Invalid value for offset: 'x'"]);
        let e = p(&["ls", "-f", "xml"]).expect_err("bad format");
        assert_eq!(e.0, ["unrecognized format: xml"]);
    }

    #[test]
    fn hexdump_matches_cephs_form() {
        assert_eq!(hexdump(b""), "");
        assert_eq!(
            hexdump(b"abc"),
            "00000000  61 62 63                                          |abc|\n00000003\n"
        );
        let s = hexdump(&[0u8; 40]);
        assert_eq!(
            s,
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000020  00 00 00 00 00 00 00 00                           |........|\n\
             00000028\n"
        );
    }

    #[test]
    fn sizes_in_cephs_units() {
        assert_eq!(byte_u(0), "0 B");
        assert_eq!(byte_u(4096), "4 KiB");
        assert_eq!(byte_u(1536 * 1024), "1.5 MiB");
    }
}

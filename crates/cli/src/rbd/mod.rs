//! `quarry rbd …` (and `rbd …` through a symlink): Ceph's image tool, with
//! its syntax, messages and exit codes (the errno of the failure).
//!
//! Layout: this module holds the argument grammar, the shared helpers
//! (connection, specs, errors, tables, progress) and the dispatch; `cmds`
//! implements the image/snapshot/metadata commands, `xfer` the data-moving
//! ones (import/export, diffs, bench), `mergediff` `rbd merge-diff` (local
//! files only: it runs without connecting).

mod admin;
mod cmds;
mod group;
mod lock;
mod mergediff;
mod migration;
mod trash;
mod v2;
mod xfer;

use std::io::IsTerminal;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use quarry_common::entity::EntityName;
use quarry_common::size::{parse_size, SizeUnit};
use quarry_common::spec::{ImageSpec, PoolSpec};
use quarry_common::Errno;
use quarry_rbd::{IoCtx, Rbd, RbdError};

/// A failed command: the lines to print (each prefixed by the tool's name)
/// and the process exit code (Ceph's tools exit with the errno).
#[derive(Debug)]
pub struct CmdError {
    /// Message lines, without the `rbd: ` prefix.
    pub lines: Vec<String>,
    /// Exit code.
    pub code: i32,
}

impl CmdError {
    /// One line with an errno.
    pub fn new(errno: Errno, msg: impl Into<String>) -> CmdError {
        CmdError {
            lines: vec![msg.into()],
            code: errno.code(),
        }
    }

    /// `what: (N) description`, Ceph's usual form.
    pub fn errno(what: &str, errno: Errno) -> CmdError {
        CmdError::new(errno, format!("{what}: {errno}"))
    }

    /// Ceph's form for an engine error; a refused connection (`EACCES`)
    /// adds the refusing daemon's reason (e.g. signatures required), which
    /// the errno alone does not tell.
    pub fn rbd(what: &str, e: &RbdError) -> CmdError {
        let err = CmdError::errno(what, e.errno());
        match e {
            RbdError::Rados { source, .. } if source.errno == Errno::EACCES => {
                err.then(source.context.clone())
            }
            _ => err,
        }
    }

    /// Add a line after the first.
    pub fn then(mut self, line: impl Into<String>) -> CmdError {
        self.lines.push(line.into());
        self
    }
}

/// Result of a command.
pub type CmdResult<T = ()> = Result<T, CmdError>;

/// Output format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    Plain,
    /// JSON (compact unless `--pretty-format`).
    Json,
}

/// Options every `rbd` subcommand accepts (Ceph's generic options).
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Pool name (default: rbd).
    #[arg(
        short = 'p',
        long = "pool",
        id = "global_pool",
        value_name = "POOL",
        global = true
    )]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// Ceph configuration file.
    #[arg(short = 'c', long = "conf", global = true)]
    pub conf: Option<String>,
    /// Client id (without the `client.` prefix).
    #[arg(long, visible_alias = "user", global = true)]
    pub id: Option<String>,
    /// Client name (`client.NAME`).
    #[arg(
        short = 'n',
        long = "name",
        id = "entity_name",
        value_name = "NAME",
        global = true
    )]
    pub name: Option<String>,
    /// Path to the keyring.
    #[arg(short = 'k', long, global = true)]
    pub keyring: Option<String>,
    /// Monitor address(es), overriding mon_host.
    #[arg(short = 'm', long = "mon-host", global = true)]
    pub mon_host: Option<String>,
    /// Cluster name.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, value_enum, global = true)]
    pub format: Option<Format>,
    /// Pretty-print JSON output.
    #[arg(long, global = true)]
    pub pretty_format: bool,
    /// Do not show progress.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

impl Global {
    /// The connection request these options describe.
    pub fn config_request(&self) -> CmdResult<quarry_connect::ConfigRequest> {
        let entity =
            match (&self.name, &self.id) {
                (Some(n), _) => Some(EntityName::parse(n).map_err(|e| {
                    CmdError::new(Errno::EINVAL, format!("invalid name '{n}': {e}"))
                })?),
                (None, Some(id)) => Some(EntityName::client(id).map_err(|e| {
                    CmdError::new(Errno::EINVAL, format!("invalid id '{id}': {e}"))
                })?),
                (None, None) => None,
            };
        let mut overrides = Vec::new();
        if let Some(k) = &self.keyring {
            overrides.push(("keyring".to_string(), k.clone()));
        }
        if let Some(m) = &self.mon_host {
            overrides.push(("mon_host".to_string(), m.clone()));
        }
        Ok(quarry_connect::ConfigRequest {
            entity,
            conf: self.conf.clone(),
            cluster: self.cluster.clone(),
            overrides,
            require_conf: false,
        })
    }

    /// Whether output is JSON.
    pub fn json(&self) -> bool {
        self.format == Some(Format::Json)
    }

    /// Whether progress bars may be drawn.
    pub fn progress(&self) -> bool {
        !self.no_progress && std::io::stderr().is_terminal()
    }

    /// The default pool: `-p`, else `rbd`.
    pub fn default_pool(&self) -> String {
        self.pool.clone().unwrap_or_else(|| "rbd".to_string())
    }
}

/// Connect as the global options say; Ceph's message on failure.
pub async fn connect_with(
    req: &quarry_connect::ConfigRequest,
    tool: &str,
) -> CmdResult<quarry_connect::Connection> {
    let cfg =
        quarry_connect::build_config(req).map_err(|e| CmdError::new(e.errno(), e.to_string()))?;
    quarry_connect::connect(&cfg).await.map_err(|e| {
        let _ = tool;
        CmdError::new(e.errno(), e.to_string()).then("couldn't connect to the cluster!")
    })
}

/// The engine plus the options, shared by every subcommand.
pub struct Ctx {
    /// Image engine on the connected object layer.
    pub rbd: Rbd,
    /// Global options.
    pub g: Global,
    /// The connection (for pool-level calls).
    pub conn: quarry_connect::Connection,
    /// Every image this command opened, closed when it ends (see [`Ctx::close_opened`]).
    pub opened: std::sync::Mutex<Vec<quarry_rbd::ImageCloser>>,
}

impl Ctx {
    /// Parse an image spec, applying `-p`/`--namespace` defaults.
    pub fn spec(&self, s: &str) -> CmdResult<ImageSpec> {
        let mut spec = ImageSpec::parse(s, &self.g.default_pool())
            .map_err(|e| CmdError::new(e.errno(), e.to_string()))?;
        if spec.namespace.is_empty() && !s.contains('/') {
            if let Some(ns) = &self.g.namespace {
                spec.namespace = ns.clone();
            }
        }
        Ok(spec)
    }

    /// Parse a pool spec (`pool[/namespace]`, empty = default pool).
    pub fn pool_spec(&self, s: Option<&str>) -> CmdResult<PoolSpec> {
        let mut p = PoolSpec::parse(s.unwrap_or(""), &self.g.default_pool())
            .map_err(|e| CmdError::new(e.errno(), e.to_string()))?;
        if p.namespace.is_empty() {
            if let Some(ns) = &self.g.namespace {
                p.namespace = ns.clone();
            }
        }
        Ok(p)
    }

    /// Open a pool and namespace: `error opening pool 'X'` on failure, and,
    /// as Ceph's tool checks before any command, `namespace 'N' does not
    /// exist.` (ENOENT) for a namespace that was never created.
    pub async fn ioctx(&self, pool: &str, namespace: &str) -> CmdResult<IoCtx> {
        let io = self.ioctx_unchecked(pool, namespace).await?;
        if !namespace.is_empty() {
            match self.rbd.namespace_exists(&io).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CmdError::new(
                        Errno::ENOENT,
                        format!("namespace '{namespace}' does not exist."),
                    ))
                }
                Err(e) => return Err(CmdError::rbd("error asserting namespace", &e)),
            }
        }
        Ok(io)
    }

    /// Open a pool with a namespace that need not exist (`namespace create`).
    pub async fn ioctx_unchecked(&self, pool: &str, namespace: &str) -> CmdResult<IoCtx> {
        self.rbd
            .ioctx(pool, namespace)
            .await
            .map_err(|e| CmdError::rbd(&format!("error opening pool '{pool}'"), &e))
    }

    /// Open the image of `spec` (at its snapshot if any, read-only then).
    pub async fn open(&self, spec: &ImageSpec, read_only: bool) -> CmdResult<quarry_rbd::Image> {
        let io = self.ioctx(&spec.pool, &spec.namespace).await?;
        self.open_in(&io, &spec.image, spec.snap.as_deref(), read_only)
            .await
    }

    /// Open an image in a known pool.
    pub async fn open_in(
        &self,
        io: &IoCtx,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> CmdResult<quarry_rbd::Image> {
        let opts = quarry_rbd::OpenOptions {
            read_only,
            snap: snap.map(|s| quarry_rbd::SnapSpec::Name(s.to_string())),
        };
        let img = self
            .rbd
            .open(io, name, &opts)
            .await
            .map_err(|e| CmdError::rbd(&format!("error opening image {name}"), &e))?;
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(img.closer());
        Ok(img)
    }

    /// Close every image the command opened, as Ceph's tool closes its
    /// handles before it exits: an exclusive lock taken by the command is
    /// handed back, so the next client need not break it. A failure is
    /// logged, not fatal: the command's own work is done by then.
    pub async fn close_opened(&self) {
        let opened = std::mem::take(&mut *self.opened.lock().unwrap_or_else(|p| p.into_inner()));
        let closes = opened
            .iter()
            .map(|c| async move { (c.spec(), c.close().await) });
        for (spec, r) in futures::future::join_all(closes).await {
            if let Err(e) = r {
                tracing::warn!(image = %spec, error = %e, "closing the image failed");
            }
        }
    }

    /// Print a JSON value as `--pretty-format` says.
    pub fn print_json(&self, v: &serde_json::Value) {
        print_json(v, self.g.pretty_format);
    }
}

/// Print JSON compactly, or indented by four spaces as Ceph's `--pretty-format`.
pub fn print_json(v: &serde_json::Value, pretty: bool) {
    use serde::Serialize;
    let mut buf = Vec::new();
    let r = if pretty {
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        v.serialize(&mut ser)
    } else {
        serde_json::to_writer(&mut buf, v)
    };
    // Serializing a Value into memory cannot fail; print nothing rather than panic.
    if r.is_ok() {
        println!("{}", String::from_utf8_lossy(&buf));
    }
}

/// Parse a size option (`--size 10G`, default unit `unit`). A bad value is
/// refused as Ceph 16's `rbd` does: exit status 1 and
/// `the argument for option '--size' is invalid`.
pub fn size_arg(opt: &str, s: &str, unit: SizeUnit) -> CmdResult<u64> {
    parse_size(s, unit).map_err(|_| CmdError {
        lines: vec![format!("the argument for option '{opt}' is invalid")],
        code: 1,
    })
}

/// A column of a [`Table`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Left.
    Left,
    /// Right.
    Right,
}

/// Ceph's `TextTable`: headers left-aligned, cells aligned per column,
/// every column padded to its width and separated by two spaces.
pub struct Table {
    cols: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(cols: &[(&str, Align)]) -> Table {
        Table {
            cols: cols.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Render with a trailing newline per line.
    pub fn render(&self) -> String {
        let w: Vec<usize> = (0..self.cols.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([self.cols[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |cells: Vec<(String, Align)>, out: &mut String| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, (c, a))| match a {
                    Align::Left => format!("{c:<width$}", width = w[i]),
                    Align::Right => format!("{c:>width$}", width = w[i]),
                })
                .collect();
            out.push_str(&parts.join("  "));
            out.push('\n');
        };
        line(
            self.cols
                .iter()
                .map(|(n, _)| (n.clone(), Align::Left))
                .collect(),
            &mut out,
        );
        for r in &self.rows {
            line(
                r.iter()
                    .cloned()
                    .zip(self.cols.iter().map(|(_, a)| *a))
                    .collect(),
                &mut out,
            );
        }
        out
    }
}

/// A progress bar on stderr, drawn only when enabled (TTY and no `--no-progress`).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Start a bar labelled like Ceph (`Importing image`) over `total` units.
    pub fn new(enabled: bool, label: &str, total: u64) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total.max(1));
        let style = indicatif::ProgressStyle::with_template(
            "{msg}: {percent:>3}% complete... [{bar:30}] {elapsed_precise}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message(label.to_string());
        Progress { bar: Some(bar) }
    }

    /// Set the total.
    pub fn set_length(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total.max(1));
        }
    }

    /// Set the position.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// Finish successfully (`...done.`).
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            eprintln!("{}: 100% complete...done.", b.message());
        }
    }

    /// Finish after a failure (`...failed.`).
    pub fn failed(&self) {
        if let Some(b) = &self.bar {
            b.abandon();
            eprintln!("{}: {}% complete...failed.", b.message(), percent(b));
        }
    }

    /// Finish by the outcome of `r` (`done` or `failed`), passing it on.
    pub fn finish<T>(&self, r: CmdResult<T>) -> CmdResult<T> {
        match &r {
            Ok(_) => self.done(),
            Err(_) => self.failed(),
        }
        r
    }
}

fn percent(b: &indicatif::ProgressBar) -> u64 {
    let len = b.length().unwrap_or(1).max(1);
    b.position() * 100 / len
}

/// (year, month 1-12, day, seconds of day, days since the epoch) of a
/// unix time, in UTC (Howard Hinnant's civil-from-days).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod, days)
}

/// Ceph's timestamp form (`Wed Nov 25 17:11:53 2026`), in UTC.
pub fn ctime(ns: u64) -> String {
    let (y, m, d, sod, days) = civil((ns / 1_000_000_000) as i64);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WD[days.rem_euclid(7) as usize],
        MO[(m - 1).clamp(0, 11) as usize],
        d,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        y
    )
}

/// Ceph's `utime_t` ISO form (`2026-11-25T17:11:53.000000+0000`), in UTC.
pub fn iso_utc(secs: u64) -> String {
    let (y, m, d, sod, _) = civil(secs as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000+0000",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `rbd` and its subcommands.
#[derive(Args, Debug)]
#[command(about = "Manage RBD images (Ceph's rbd syntax)")]
pub struct RbdArgs {
    #[command(flatten)]
    g: Global,
    #[command(subcommand)]
    cmd: RbdCmd,
}

/// Image-creation options shared by create, import, clone, cp.
#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Object size in B/K/M (power of two, 4K..32M).
    #[arg(long)]
    pub object_size: Option<String>,
    /// Object order (object size = 2^order), 12..25.
    #[arg(long)]
    pub order: Option<u8>,
    /// Image features (repeatable, or a comma list): layering, exclusive-lock, object-map, fast-diff, deep-flatten.
    #[arg(long = "image-feature")]
    pub image_feature: Vec<String>,
    /// Image format (only 2 is supported).
    #[arg(long)]
    pub image_format: Option<u32>,
    /// Shared image: exclusive-lock, object-map and fast-diff disabled.
    #[arg(long)]
    pub image_shared: bool,
    /// Stripe unit in B/K/M (only the object size: no fancy striping).
    #[arg(long)]
    pub stripe_unit: Option<String>,
    /// Stripe count (only 1: no fancy striping).
    #[arg(long)]
    pub stripe_count: Option<u64>,
    /// Separate data pool (not supported: refused).
    #[arg(long)]
    pub data_pool: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RbdCmd {
    /// Create an empty image.
    Create {
        /// Image spec `[pool/[namespace/]]image`.
        image: String,
        /// Image size (default unit MiB; K/M/G/T suffixes).
        #[arg(short = 's', long, allow_hyphen_values = true)]
        size: Option<String>,
        /// Write zeros over the whole image (every block allocated).
        #[arg(long)]
        thick_provision: bool,
        #[command(flatten)]
        c: CreateArgs,
    },
    /// List images of a pool.
    #[command(visible_alias = "list")]
    Ls {
        /// Pool spec `[pool[/namespace]]`.
        pool: Option<String>,
        /// Long listing (size, parent, format, snapshots).
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Show information about an image.
    Info {
        /// Image spec `[pool/[namespace/]]image[@snap]`.
        image: String,
    },
    /// Show provisioned and used space of an image (or all images of the pool).
    #[command(visible_alias = "disk-usage")]
    Du {
        /// Image spec; omitted = every image in the pool.
        image: Option<String>,
        /// Only changes since this snapshot.
        #[arg(long)]
        from_snap: Option<String>,
    },
    /// Resize an image.
    Resize {
        /// Image spec.
        image: String,
        /// New size (default unit MiB).
        #[arg(short = 's', long, allow_hyphen_values = true)]
        size: String,
        /// Permit shrinking.
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Delete an image.
    #[command(visible_alias = "remove")]
    Rm {
        /// Image spec.
        image: String,
    },
    /// Rename an image within its pool.
    #[command(visible_alias = "rename")]
    Mv {
        /// Source image spec.
        src: String,
        /// Destination image spec.
        dest: String,
    },
    /// Copy an image (head or snapshot) to a new image.
    #[command(visible_alias = "copy")]
    Cp {
        /// Source image spec (`@snap` allowed).
        src: String,
        /// Destination image spec.
        dest: String,
        #[command(flatten)]
        c: CreateArgs,
    },
    /// Deep copy: an image with all its snapshots (`rbd deep cp`).
    Deep {
        #[command(subcommand)]
        cmd: DeepCmd,
    },
    /// Deferred removal: move images to the trash, list, restore, remove.
    Trash {
        #[command(subcommand)]
        cmd: TrashCmd,
    },
    /// Live migration of an image to another pool, namespace or name.
    Migration {
        #[command(subcommand)]
        cmd: MigrationCmd,
    },
    /// Snapshot management.
    Snap {
        #[command(subcommand)]
        cmd: SnapCmd,
    },
    /// Clone a protected snapshot into a new copy-on-write image.
    Clone {
        /// Parent `pool/image@snap`.
        parent: String,
        /// Child image spec.
        child: String,
        #[command(flatten)]
        c: CreateArgs,
    },
    /// List the clones of a snapshot.
    Children {
        /// Image spec with `@snap` (or `--snap`); without a snapshot, the
        /// children of all its snapshots.
        image: String,
        /// Snapshot name.
        #[arg(long)]
        snap: Option<String>,
        /// Also list children in the trash.
        #[arg(short = 'a', long)]
        all: bool,
        /// Also list grandchildren.
        #[arg(long)]
        descendants: bool,
    },
    /// Copy the parent's data into a clone and detach it.
    Flatten {
        /// Image spec.
        image: String,
    },
    /// Give back the space of zeroed data (what the image reads is unchanged).
    Sparsify {
        /// Chunk size checked for zeros (a power of two, at least 4K).
        #[arg(long, default_value = "4K")]
        sparse_size: String,
        /// Image spec.
        image: String,
    },
    /// Import a raw file (or `-` for stdin) as a new image.
    Import {
        /// Source path or `-`.
        path: String,
        /// Destination image spec (default: the file's name).
        dest: Option<String>,
        /// Destination pool.
        #[arg(long)]
        dest_pool: Option<String>,
        /// Stream format: 1 (raw, default) or 2 (Ceph's image stream with snapshots).
        #[arg(long)]
        export_format: Option<u32>,
        #[command(flatten)]
        c: CreateArgs,
    },
    /// Export an image (or snapshot) to a raw file (or `-` for stdout).
    Export {
        /// Image spec (`@snap` allowed).
        image: String,
        /// Destination path or `-`.
        path: String,
        /// Export format: 1 (raw, default) or 2 (Ceph's image stream with snapshots).
        #[arg(long)]
        export_format: Option<u32>,
    },
    /// Write the changes between two snapshots as an `rbd diff v1` stream.
    ExportDiff {
        /// Image spec (`@snap` = end snapshot).
        image: String,
        /// Destination path or `-`.
        path: String,
        /// Start snapshot (omitted = from the beginning).
        #[arg(long)]
        from_snap: Option<String>,
        /// Report whole objects (accepted for compatibility).
        #[arg(long)]
        whole_object: bool,
    },
    /// Apply an `rbd diff v1` stream to an image.
    ImportDiff {
        /// Source path or `-`.
        path: String,
        /// Image spec.
        image: String,
    },
    /// Merge two diff exports together (A→B and B→C into A→C); no cluster needed.
    MergeDiff {
        /// Path to the first diff (or `-` for stdin).
        #[arg(value_name = "diff1-path")]
        first_diff: Option<String>,
        /// Path to the second diff.
        #[arg(value_name = "diff2-path")]
        second_diff: Option<String>,
        /// Path to the merged diff (or `-` for stdout).
        #[arg(value_name = "path-name")]
        path_name: Option<String>,
        /// Path to the merged diff (or `-` for stdout); wins over `path-name`.
        #[arg(long = "path", value_name = "PATH")]
        path: Option<String>,
    },
    /// List extents that differ between two points in time.
    Diff {
        /// Image spec (`@snap` allowed).
        image: String,
        /// Start snapshot.
        #[arg(long)]
        from_snap: Option<String>,
        /// Object granularity.
        #[arg(long)]
        whole_object: bool,
    },
    /// LUKS encryption of an image (`rbd encryption format`).
    Encryption {
        #[command(subcommand)]
        cmd: EncryptionCmd,
    },
    /// Image metadata (key/value pairs).
    ImageMeta {
        #[command(subcommand)]
        cmd: MetaCmd,
    },
    /// Exclusive lock of an image.
    Lock {
        #[command(subcommand)]
        cmd: LockCmd,
    },
    /// Show watchers of an image.
    Status {
        /// Image spec.
        image: String,
    },
    /// Simple I/O benchmark.
    Bench {
        /// Image spec.
        image: String,
        /// write or read.
        #[arg(long)]
        io_type: String,
        /// I/O size (default 4K; bytes unless suffixed).
        #[arg(long, default_value = "4K")]
        io_size: String,
        /// Concurrent I/Os.
        #[arg(long, default_value_t = 16)]
        io_threads: u32,
        /// Total bytes (default 1G).
        #[arg(long, default_value = "1G")]
        io_total: String,
        /// rand or seq.
        #[arg(long, default_value = "seq")]
        io_pattern: String,
    },
    /// Pool-level commands.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Rebuild or check an image's object map.
    #[command(name = "object-map")]
    ObjectMap {
        #[command(subcommand)]
        cmd: ObjectMapCmd,
    },
    /// Enable or disable image features.
    Feature {
        #[command(subcommand)]
        cmd: FeatureCmd,
    },
    /// Namespaces of a pool.
    Namespace {
        #[command(subcommand)]
        cmd: NamespaceCmd,
    },
    /// Consistency groups: images snapshotted together.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Per-pool and per-image librbd option overrides.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ObjectMapCmd {
    /// Make the object map again from the objects that exist.
    Rebuild {
        /// Image spec.
        image: String,
    },
    /// Verify the object map against the objects that exist.
    Check {
        /// Image spec.
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum FeatureCmd {
    /// Enable features (exclusive-lock, object-map, fast-diff).
    Enable {
        /// Image spec.
        image: String,
        /// Feature names (exclusive-lock, object-map, fast-diff, ...).
        #[arg(required = true)]
        features: Vec<String>,
    },
    /// Disable features.
    Disable {
        /// Image spec.
        image: String,
        /// Feature names.
        #[arg(required = true)]
        features: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    /// Create a group (`[pool/[namespace/]]group`).
    Create {
        /// Group spec.
        group: String,
    },
    /// Delete a group: its snapshots go, its images leave it.
    #[command(visible_alias = "remove")]
    Rm {
        /// Group spec.
        group: String,
    },
    /// List the groups of a pool.
    #[command(visible_alias = "list")]
    Ls {
        /// `pool[/namespace]`.
        pool: Option<String>,
    },
    /// Rename a group within its pool and namespace.
    Rename {
        /// Group spec.
        src: String,
        /// New group spec.
        dest: String,
    },
    /// The images of a group.
    Image {
        #[command(subcommand)]
        cmd: GroupImageCmd,
    },
    /// Snapshots of a group (crash-consistent across its images).
    Snap {
        #[command(subcommand)]
        cmd: GroupSnapCmd,
    },
}

#[derive(Subcommand, Debug)]
enum GroupImageCmd {
    /// Add an image to a group.
    Add {
        /// Group spec.
        group: String,
        /// Image spec.
        image: String,
    },
    /// Remove an image from a group.
    #[command(visible_alias = "remove")]
    Rm {
        /// Group spec.
        group: String,
        /// Image spec.
        image: String,
    },
    /// List the images of a group.
    #[command(visible_alias = "list")]
    Ls {
        /// Group spec.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
enum GroupSnapCmd {
    /// Snapshot every image of a group at one point in time.
    Create {
        /// `group@snap`.
        spec: String,
        /// Accepted: Quarry has no quiesce hooks to skip.
        #[arg(long)]
        skip_quiesce: bool,
        /// Accepted: Quarry has no quiesce hooks to fail.
        #[arg(long)]
        ignore_quiesce_error: bool,
    },
    /// Remove a group snapshot (and its image snapshots).
    #[command(visible_alias = "remove")]
    Rm {
        /// `group@snap`.
        spec: String,
    },
    /// Rename a group snapshot.
    Rename {
        /// `group@snap`.
        spec: String,
        /// New snapshot name.
        dest: String,
    },
    /// List the snapshots of a group.
    #[command(visible_alias = "list")]
    Ls {
        /// Group spec.
        group: String,
    },
    /// Roll every image of the group back to a group snapshot.
    Rollback {
        /// `group@snap`.
        spec: String,
    },
}

#[derive(Subcommand, Debug)]
enum NamespaceCmd {
    /// Create a namespace (`pool/namespace`, or `--pool` and `--namespace`).
    #[command(visible_alias = "add")]
    Create {
        /// `pool/namespace`.
        spec: Option<String>,
    },
    /// List the namespaces of a pool.
    #[command(visible_alias = "list")]
    Ls {
        /// Pool name.
        pool: Option<String>,
    },
    /// Remove an empty namespace.
    #[command(visible_alias = "remove")]
    Rm {
        /// `pool/namespace`.
        spec: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Overrides stored in a pool (apply to every image in it).
    Pool {
        #[command(subcommand)]
        cmd: ConfigOp,
    },
    /// Overrides stored in one image (beat the pool's).
    Image {
        #[command(subcommand)]
        cmd: ConfigOp,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigOp {
    /// Show an override.
    Get {
        /// Pool (`config pool`) or image spec (`config image`).
        target: String,
        /// Option name (rbd_*).
        key: String,
    },
    /// Set an override (validated against the option's type).
    Set {
        /// Pool or image spec.
        target: String,
        /// Option name (rbd_*).
        key: String,
        /// Value.
        value: String,
    },
    /// Remove an override.
    #[command(visible_alias = "rm")]
    Remove {
        /// Pool or image spec.
        target: String,
        /// Option name (rbd_*).
        key: String,
    },
    /// List every rbd_* option with its effective value and source.
    #[command(visible_alias = "ls")]
    List {
        /// Pool or image spec.
        target: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeepCmd {
    /// Copy an image (or an image up to one of its snapshots) with its
    /// snapshots; a clone's copy is a clone of the same parent snapshot.
    #[command(visible_alias = "copy")]
    Cp {
        /// Source image spec (`@snap`: the snapshots up to this one).
        src: String,
        /// Destination image spec.
        dest: String,
        /// Copy a clone's parent data instead of keeping it a clone.
        #[arg(long)]
        flatten: bool,
        #[command(flatten)]
        c: CreateArgs,
    },
}

#[derive(Subcommand, Debug)]
enum MigrationCmd {
    /// Create the destination (usable at once) and hide the source.
    Prepare {
        /// Source image spec.
        src: String,
        /// Destination image spec (default: the source's name).
        dest: Option<String>,
        /// Destination pool.
        #[arg(long)]
        dest_pool: Option<String>,
        #[command(flatten)]
        c: CreateArgs,
    },
    /// Copy every object of the source into the destination.
    Execute {
        /// Image spec (either end).
        image: String,
    },
    /// Finish an executed migration: remove the source.
    Commit {
        /// Image spec (either end).
        image: String,
    },
    /// Undo a migration: remove the destination, restore the source.
    Abort {
        /// Image spec (either end).
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum TrashCmd {
    /// Move an image to the trash.
    #[command(visible_alias = "mv")]
    Move {
        /// Image spec.
        image: String,
        /// When it may be purged (a date `date --date` reads; default now).
        #[arg(long = "expires-at")]
        expires_at: Option<String>,
    },
    /// List trashed images.
    #[command(visible_alias = "ls")]
    List {
        /// `pool[/namespace]`.
        pool: Option<String>,
        /// Images from all sources.
        #[arg(short = 'a', long)]
        all: bool,
        /// Long listing format.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Remove a trashed image and its data.
    #[command(visible_alias = "rm")]
    Remove {
        /// `[pool/[namespace/]]image-id`.
        image_id: Option<String>,
        /// Image id.
        #[arg(long = "image-id")]
        id: Option<String>,
        /// Remove even before its expiration time.
        #[arg(long)]
        force: bool,
    },
    /// Restore a trashed image.
    Restore {
        /// `[pool/[namespace/]]image-id`.
        image_id: Option<String>,
        /// Image id.
        #[arg(long = "image-id")]
        id: Option<String>,
        /// Restore under this name instead of the old one.
        #[arg(long)]
        image: Option<String>,
    },
    /// Remove every expired trashed image.
    Purge {
        /// `pool[/namespace]`.
        pool: Option<String>,
        /// Images that expired before this date (default now).
        #[arg(long = "expired-before")]
        expired_before: Option<String>,
        /// Purge until the pool's usage is below this ratio (not supported).
        #[arg(long)]
        threshold: Option<f32>,
    },
}

#[derive(Subcommand, Debug)]
enum SnapCmd {
    /// Create a snapshot.
    #[command(visible_alias = "add")]
    Create {
        /// `image@snap`.
        spec: String,
        /// Accepted: Quarry has no quiesce hooks to skip.
        #[arg(long)]
        skip_quiesce: bool,
        /// Accepted: Quarry has no quiesce hooks to fail.
        #[arg(long)]
        ignore_quiesce_error: bool,
    },
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls {
        /// Image spec.
        image: String,
        /// Also the snapshots of other namespaces (group snapshots').
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Delete a snapshot.
    #[command(visible_alias = "remove")]
    Rm {
        /// `image@snap`.
        spec: String,
    },
    /// Roll the image back to a snapshot.
    #[command(visible_alias = "revert")]
    Rollback {
        /// `image@snap`.
        spec: String,
    },
    /// Protect a snapshot from removal (needed to clone it).
    Protect {
        /// `image@snap`.
        spec: String,
    },
    /// Unprotect a snapshot.
    Unprotect {
        /// `image@snap`.
        spec: String,
    },
    /// Delete every unprotected snapshot.
    Purge {
        /// Image spec.
        image: String,
    },
    /// Rename a snapshot.
    Rename {
        /// `image@snap`.
        src: String,
        /// `image@newsnap` or just the new name.
        dest: String,
    },
    /// Limit how many snapshots an image may have.
    Limit {
        #[command(subcommand)]
        cmd: SnapLimitCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SnapLimitCmd {
    /// Set the most snapshots the image may have (creating one more fails
    /// with "Disk quota exceeded").
    Set {
        /// Maximum snapshot count.
        #[arg(long)]
        limit: u64,
        /// Image spec.
        image: String,
    },
    /// Remove the snapshot limit.
    Clear {
        /// Image spec.
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum LockCmd {
    /// Show locks held on an image.
    #[command(visible_alias = "ls")]
    List {
        /// Image spec.
        image: String,
    },
    /// Take a lock on an image (advisory).
    Add {
        /// Image spec.
        image: String,
        /// Unique lock id.
        lock_id: String,
        /// Shared lock tag (an exclusive lock without it).
        #[arg(long, value_name = "TAG")]
        shared: Option<String>,
    },
    /// Release a lock on an image: the one LOCKER holds under LOCK_ID (as
    /// `rbd lock ls` shows them).
    #[command(visible_alias = "rm")]
    Remove {
        /// Image spec.
        image: String,
        /// Lock id (`auto <n>` for the exclusive-lock feature's lock).
        lock_id: String,
        /// Locker (`client.<id>`).
        locker: String,
    },
}

/// `rbd encryption ...`.
#[derive(Subcommand, Debug)]
enum EncryptionCmd {
    /// Write a LUKS header (one key slot opened by the passphrase) at the
    /// start of the image; the data after it is what a client that loads
    /// the encryption reads and writes.
    Format {
        /// Image spec.
        image: String,
        /// luks1 or luks2 (not `format`: that is the global `--format`).
        #[arg(value_name = "FORMAT")]
        luks: String,
        /// File holding the passphrase (one trailing newline is dropped).
        passphrase_file: String,
        /// aes-128 or aes-256 (default).
        #[arg(long)]
        cipher_alg: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum MetaCmd {
    /// Get a value.
    Get {
        /// Image spec.
        image: String,
        /// Key.
        key: String,
    },
    /// Set a value.
    Set {
        /// Image spec.
        image: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// List all keys and values.
    #[command(visible_alias = "ls")]
    List {
        /// Image spec.
        image: String,
    },
    /// Remove a key.
    #[command(visible_alias = "rm")]
    Remove {
        /// Image spec.
        image: String,
        /// Key.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Prepare a pool for RBD images.
    Init {
        /// Pool name.
        pool: Option<String>,
        /// Enable `rbd` even beside another application already enabled.
        #[arg(long)]
        force: bool,
    },
    /// Display pool statistics: images, snapshots, provisioned size.
    Stats {
        /// Pool spec (`pool[/namespace]`).
        pool: Option<String>,
    },
}

/// Run `rbd`; returns the process exit code.
pub fn run(a: RbdArgs) -> i32 {
    let Some(rt) = crate::tools::runtime("rbd") else {
        return 1;
    };
    match rt.block_on(dispatch(a)) {
        Ok(()) => 0,
        Err(e) => {
            for l in &e.lines {
                eprintln!("rbd: {l}");
            }
            e.code
        }
    }
}

async fn dispatch(a: RbdArgs) -> CmdResult {
    if let RbdCmd::MergeDiff {
        first_diff,
        second_diff,
        path_name,
        path,
    } = &a.cmd
    {
        // Files only: no configuration, no connection (as Ceph's tool).
        return mergediff::merge_diff(
            a.g.progress(),
            first_diff.as_deref(),
            second_diff.as_deref(),
            path_name.as_deref(),
            path.as_deref(),
        );
    }
    let req = a.g.config_request()?;
    let conn = connect_with(&req, "rbd").await?;
    let fence = quarry_rbd::FencePolicy::from_options(
        conn.config
            .get_bool("rbd_blocklist_on_break_lock")
            .unwrap_or(true),
        conn.config
            .get_u64("rbd_blocklist_expire_seconds")
            .unwrap_or(0),
    );
    let ctx = Ctx {
        rbd: Rbd::with_fence_policy(Arc::clone(&conn.rados), fence).with_timestamp_intervals(
            quarry_rbd::TimestampIntervals::from_options(
                conn.config
                    .get_u64("rbd_atime_update_interval")
                    .unwrap_or(60),
                conn.config
                    .get_u64("rbd_mtime_update_interval")
                    .unwrap_or(60),
            ),
        ),
        g: a.g,
        conn,
        opened: Default::default(),
    };
    let r = run_cmd(&ctx, a.cmd).await;
    ctx.close_opened().await;
    r
}

/// Run one parsed `rbd` command.
async fn run_cmd(ctx: &Ctx, cmd: RbdCmd) -> CmdResult {
    use RbdCmd::*;
    match cmd {
        Create {
            image,
            size,
            thick_provision,
            c,
        } => cmds::create(ctx, &image, size.as_deref(), thick_provision, &c).await,
        Ls { pool, long } => cmds::ls(ctx, pool.as_deref(), long).await,
        Info { image } => cmds::info(ctx, &image).await,
        Du { image, from_snap } => cmds::du(ctx, image.as_deref(), from_snap.as_deref()).await,
        Resize {
            image,
            size,
            allow_shrink,
        } => cmds::resize(ctx, &image, &size, allow_shrink).await,
        Rm { image } => cmds::rm(ctx, &image).await,
        Mv { src, dest } => cmds::mv(ctx, &src, &dest).await,
        Cp { src, dest, c } => xfer::cp(ctx, &src, &dest, &c, None).await,
        Deep {
            cmd:
                DeepCmd::Cp {
                    src,
                    dest,
                    flatten,
                    c,
                },
        } => xfer::cp(ctx, &src, &dest, &c, Some(flatten)).await,
        Trash { cmd } => match cmd {
            TrashCmd::Move { image, expires_at } => {
                trash::mv(ctx, &image, expires_at.as_deref()).await
            }
            TrashCmd::List { pool, all, long } => trash::ls(ctx, pool.as_deref(), long, all).await,
            TrashCmd::Remove {
                image_id,
                id,
                force,
            } => trash::rm(ctx, image_id.as_deref(), id.as_deref(), force).await,
            TrashCmd::Restore {
                image_id,
                id,
                image,
            } => trash::restore(ctx, image_id.as_deref(), id.as_deref(), image.as_deref()).await,
            TrashCmd::Purge {
                pool,
                expired_before,
                threshold,
            } => trash::purge(ctx, pool.as_deref(), expired_before.as_deref(), threshold).await,
        },
        Migration { cmd } => match cmd {
            MigrationCmd::Prepare {
                src,
                dest,
                dest_pool,
                c,
            } => migration::prepare(ctx, &src, dest.as_deref(), dest_pool.as_deref(), &c).await,
            MigrationCmd::Execute { image } => migration::execute(ctx, &image).await,
            MigrationCmd::Commit { image } => migration::commit(ctx, &image).await,
            MigrationCmd::Abort { image } => migration::abort(ctx, &image).await,
        },
        Snap { cmd } => match cmd {
            SnapCmd::Create { spec, .. } => cmds::snap_create(ctx, &spec).await,
            SnapCmd::Ls { image, all } => cmds::snap_ls(ctx, &image, all).await,
            SnapCmd::Rm { spec } => cmds::snap_rm(ctx, &spec).await,
            SnapCmd::Rollback { spec } => cmds::snap_rollback(ctx, &spec).await,
            SnapCmd::Protect { spec } => cmds::snap_protect(ctx, &spec).await,
            SnapCmd::Unprotect { spec } => cmds::snap_unprotect(ctx, &spec).await,
            SnapCmd::Purge { image } => cmds::snap_purge(ctx, &image).await,
            SnapCmd::Rename { src, dest } => cmds::snap_rename(ctx, &src, &dest).await,
            SnapCmd::Limit {
                cmd: SnapLimitCmd::Set { limit, image },
            } => cmds::snap_limit(ctx, &image, Some(limit)).await,
            SnapCmd::Limit {
                cmd: SnapLimitCmd::Clear { image },
            } => cmds::snap_limit(ctx, &image, None).await,
        },
        Clone { parent, child, c } => cmds::clone(ctx, &parent, &child, &c).await,
        Children {
            image,
            snap,
            all,
            descendants,
        } => cmds::children(ctx, &image, snap.as_deref(), all, descendants).await,
        Flatten { image } => cmds::flatten(ctx, &image).await,
        Sparsify { image, sparse_size } => cmds::sparsify(ctx, &image, &sparse_size).await,
        Import {
            path,
            dest,
            dest_pool,
            export_format,
            c,
        } => {
            xfer::import(
                ctx,
                &path,
                dest.as_deref(),
                dest_pool.as_deref(),
                export_format,
                &c,
            )
            .await
        }
        Export {
            image,
            path,
            export_format,
        } => xfer::export(ctx, &image, &path, export_format).await,
        ExportDiff {
            image,
            path,
            from_snap,
            whole_object,
        } => xfer::export_diff(ctx, &image, &path, from_snap.as_deref(), whole_object).await,
        ImportDiff { path, image } => xfer::import_diff(ctx, &path, &image).await,
        MergeDiff {
            first_diff,
            second_diff,
            path_name,
            path,
        } => mergediff::merge_diff(
            ctx.g.progress(),
            first_diff.as_deref(),
            second_diff.as_deref(),
            path_name.as_deref(),
            path.as_deref(),
        ),
        Diff {
            image,
            from_snap,
            whole_object,
        } => xfer::diff(ctx, &image, from_snap.as_deref(), whole_object).await,
        Encryption {
            cmd:
                EncryptionCmd::Format {
                    image,
                    luks,
                    passphrase_file,
                    cipher_alg,
                },
        } => {
            cmds::encryption_format(ctx, &image, &luks, &passphrase_file, cipher_alg.as_deref())
                .await
        }
        ImageMeta { cmd } => match cmd {
            MetaCmd::Get { image, key } => cmds::meta_get(ctx, &image, &key).await,
            MetaCmd::Set { image, key, value } => cmds::meta_set(ctx, &image, &key, &value).await,
            MetaCmd::List { image } => cmds::meta_list(ctx, &image).await,
            MetaCmd::Remove { image, key } => cmds::meta_remove(ctx, &image, &key).await,
        },
        Lock { cmd } => match cmd {
            LockCmd::List { image } => lock::ls(ctx, &image).await,
            LockCmd::Add {
                image,
                lock_id,
                shared,
            } => lock::add(ctx, &image, &lock_id, shared.as_deref()).await,
            LockCmd::Remove {
                image,
                lock_id,
                locker,
            } => lock::rm(ctx, &image, &lock_id, &locker).await,
        },
        Status { image } => cmds::status(ctx, &image).await,
        Bench {
            image,
            io_type,
            io_size,
            io_threads,
            io_total,
            io_pattern,
        } => {
            xfer::bench(
                ctx,
                &image,
                &io_type,
                &io_size,
                io_threads,
                &io_total,
                &io_pattern,
            )
            .await
        }
        Pool { cmd } => match cmd {
            PoolCmd::Init { pool, force } => cmds::pool_init(ctx, pool.as_deref(), force).await,
            PoolCmd::Stats { pool } => cmds::pool_stats(ctx, pool.as_deref()).await,
        },
        ObjectMap { cmd } => match cmd {
            ObjectMapCmd::Rebuild { image } => admin::object_map_rebuild(ctx, &image).await,
            ObjectMapCmd::Check { image } => admin::object_map_check(ctx, &image).await,
        },
        Feature { cmd } => match cmd {
            FeatureCmd::Enable { image, features } => {
                admin::feature(ctx, &image, &features, true).await
            }
            FeatureCmd::Disable { image, features } => {
                admin::feature(ctx, &image, &features, false).await
            }
        },
        Group { cmd } => match cmd {
            GroupCmd::Create { group } => group::create(ctx, &group).await,
            GroupCmd::Rm { group } => group::remove(ctx, &group).await,
            GroupCmd::Ls { pool } => group::list(ctx, pool.as_deref()).await,
            GroupCmd::Rename { src, dest } => group::rename(ctx, &src, &dest).await,
            GroupCmd::Image { cmd } => match cmd {
                GroupImageCmd::Add { group, image } => group::image_add(ctx, &group, &image).await,
                GroupImageCmd::Rm { group, image } => {
                    group::image_remove(ctx, &group, &image).await
                }
                GroupImageCmd::Ls { group } => group::image_list(ctx, &group).await,
            },
            GroupCmd::Snap { cmd } => match cmd {
                GroupSnapCmd::Create { spec, .. } => group::snap_create(ctx, &spec).await,
                GroupSnapCmd::Rm { spec } => group::snap_remove(ctx, &spec).await,
                GroupSnapCmd::Rename { spec, dest } => group::snap_rename(ctx, &spec, &dest).await,
                GroupSnapCmd::Ls { group } => group::snap_list(ctx, &group).await,
                GroupSnapCmd::Rollback { spec } => group::snap_rollback(ctx, &spec).await,
            },
        },
        Namespace { cmd } => match cmd {
            NamespaceCmd::Create { spec } => admin::namespace_create(ctx, spec.as_deref()).await,
            NamespaceCmd::Ls { pool } => admin::namespace_ls(ctx, pool.as_deref()).await,
            NamespaceCmd::Rm { spec } => admin::namespace_rm(ctx, spec.as_deref()).await,
        },
        Config { cmd } => {
            let (op, pool) = match cmd {
                ConfigCmd::Pool { cmd } => (cmd, true),
                ConfigCmd::Image { cmd } => (cmd, false),
            };
            let target = |t: String| {
                if pool {
                    admin::ConfTarget::Pool(t)
                } else {
                    admin::ConfTarget::Image(t)
                }
            };
            match op {
                ConfigOp::Get { target: t, key } => admin::config_get(ctx, &target(t), &key).await,
                ConfigOp::Set {
                    target: t,
                    key,
                    value,
                } => admin::config_set(ctx, &target(t), &key, &value).await,
                ConfigOp::Remove { target: t, key } => {
                    admin::config_rm(ctx, &target(t), &key).await
                }
                ConfigOp::List { target: t } => admin::config_list(ctx, &target(t)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_ceph() {
        // 2026-11-25T17:11:53Z, a Wednesday (from the golden record).
        let ns = 1_795_626_713u64 * 1_000_000_000;
        assert_eq!(ctime(ns), "Wed Nov 25 17:11:53 2026");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn table_like_ceph() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("PROVISIONED", Align::Right),
            ("USED", Align::Right),
        ]);
        t.row(vec!["squeeze".into(), "64 MiB".into(), "12 MiB".into()]);
        assert_eq!(
            t.render(),
            "NAME     PROVISIONED  USED  \nsqueeze       64 MiB  12 MiB\n"
        );
    }
}

//! Image, snapshot, clone and metadata commands of `rbd`.

use quarry_common::options::{parse_features, Level, RBD_FEATURE_NAMES};
use quarry_common::size::{format_size, SizeUnit};
use quarry_common::spec::ImageSpec;
use quarry_common::Errno;
use quarry_rbd::{CreateOptions, DiffOptions, Image, IoCtx};
use serde_json::{json, Value};

use super::{ctime, size_arg, Align, CmdError, CmdResult, CreateArgs, Ctx, Progress, Table};

/// Feature names of a bit set, in bit order (as `rbd info`).
pub fn feature_names(bits: u64) -> Vec<&'static str> {
    RBD_FEATURE_NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect()
}

fn flag_names(bits: u64) -> Vec<&'static str> {
    let mut v = Vec::new();
    if bits & quarry_rbd::FLAG_OBJECT_MAP_INVALID != 0 {
        v.push("object map invalid");
    }
    if bits & quarry_rbd::FLAG_FAST_DIFF_INVALID != 0 {
        v.push("fast diff invalid");
    }
    v
}

/// Creation options from `--order/--object-size/--image-feature/--image-format`.
/// `what` prefixes errors (`create error`, `import failed`, ...).
pub fn create_opts(ctx: &Ctx, c: &CreateArgs, what: &str) -> CmdResult<CreateOptions> {
    match c.image_format {
        None | Some(2) => {}
        Some(1) => {
            return Err(CmdError::new(Errno::EINVAL, "image format 1 is deprecated")
                .then(format!("{what}: {}", Errno::EINVAL)))
        }
        Some(n) => {
            return Err(CmdError::new(
                Errno::EINVAL,
                format!("invalid image format {n}: only 2 is supported"),
            ))
        }
    }
    let mut order = c.order.unwrap_or(0);
    if let Some(os) = &c.object_size {
        let bytes = size_arg("--object-size", os, SizeUnit::Bytes)?;
        if !bytes.is_power_of_two() {
            return Err(CmdError::new(
                Errno::EINVAL,
                "object size must be a power of two",
            ));
        }
        order = bytes.trailing_zeros() as u8;
    }
    if order != 0 && !(quarry_rbd::MIN_ORDER..=quarry_rbd::MAX_ORDER).contains(&order) {
        return Err(CmdError::new(
            Errno::EINVAL,
            format!(
                "order must be in the range [{}, {}]",
                quarry_rbd::MIN_ORDER,
                quarry_rbd::MAX_ORDER
            ),
        ));
    }
    if c.data_pool.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(CmdError::new(
            Errno::EOPNOTSUPP,
            "separate data pools are not supported",
        ));
    }
    // Striping is accepted only as the default one (unit = object size).
    let obj = 1u64 << if order == 0 { 22 } else { order };
    let su = match &c.stripe_unit {
        Some(v) => size_arg("--stripe-unit", v, SizeUnit::Bytes)?,
        None => obj,
    };
    if su != obj || c.stripe_count.is_some_and(|n| n != 1) {
        return Err(CmdError::new(
            Errno::EINVAL,
            "fancy striping is not supported: the stripe unit must be the object size and the stripe count 1",
        ));
    }
    let features = if c.image_feature.is_empty() {
        // `rbd_default_features` from the conf file, environment or the
        // monitors' config database, as Ceph's rbd tool reads it.
        match ctx.conn.config.get_with_source("rbd_default_features") {
            Ok((_, Level::Default)) | Err(_) => None,
            Ok(_) => ctx.conn.config.get_u64("rbd_default_features").ok(),
        }
    } else {
        let mut bits = 0;
        for f in &c.image_feature {
            bits |= parse_features(f)
                .map_err(|e| CmdError::new(Errno::EINVAL, format!("image features: {e}")))?;
        }
        Some(bits)
    };
    // As Ceph's tool: a shared image drops what assumes a single writer.
    let features = if c.image_shared {
        let single_writer = quarry_rbd::FEATURE_EXCLUSIVE_LOCK
            | quarry_rbd::FEATURE_OBJECT_MAP
            | quarry_rbd::FEATURE_FAST_DIFF
            | quarry_rbd::FEATURE_JOURNALING;
        Some(features.unwrap_or(quarry_rbd::FEATURES_DEFAULT) & !single_writer)
    } else {
        features
    };
    Ok(CreateOptions { order, features })
}

/// `rbd create [--thick-provision]`.
pub async fn create(
    ctx: &Ctx,
    image: &str,
    size: Option<&str>,
    thick: bool,
    c: &CreateArgs,
) -> CmdResult {
    let spec = ctx.spec(image)?;
    let Some(size) = size else {
        return Err(CmdError::new(Errno::EINVAL, "must specify --size <M/G/T>"));
    };
    let size = size_arg("--size", size, SizeUnit::MiB)?;
    let opts = create_opts(ctx, c, "create error")?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    ctx.rbd
        .create(&io, &spec.image, size, &opts)
        .await
        .map_err(|e| CmdError::rbd("create error", &e))?;
    if !thick {
        return Ok(());
    }
    // Zeros written object by object, with Ceph's progress label.
    let img = ctx.open_in(&io, &spec.image, None, false).await?;
    let p = Progress::new(ctx.g.progress(), "Thick provisioning", size);
    let step = 4u64 << 20;
    let mut off = 0;
    while off < size {
        let n = step.min(size - off);
        if let Err(e) = img
            .write_zeroes(off, n, quarry_rbd::WRITE_ZEROES_FLAG_THICK_PROVISION)
            .await
        {
            p.failed();
            return Err(CmdError::rbd("thick provisioning failed", &e));
        }
        off += n;
        p.set(off);
    }
    p.done();
    img.close()
        .await
        .map_err(|e| CmdError::rbd("thick provisioning failed", &e))
}

pub(super) fn parent_string(io: &IoCtx, p: &quarry_rbd::ParentInfo) -> String {
    let _ = io;
    if p.namespace.is_empty() {
        format!("{}/{}@{}", p.pool_name, p.image_name, p.snap_name)
    } else {
        format!(
            "{}/{}/{}@{}",
            p.pool_name, p.namespace, p.image_name, p.snap_name
        )
    }
}

/// `rbd ls [-l]`.
pub async fn ls(ctx: &Ctx, pool: Option<&str>, long: bool) -> CmdResult {
    let ps = ctx.pool_spec(pool)?;
    let io = ctx
        .ioctx(ps.pool.as_str(), &ps.namespace)
        .await
        .map_err(|e| {
            let errno = Errno::from_code(e.code);
            e.then(format!("listing images failed: {errno}"))
        })?;
    let mut images = ctx
        .rbd
        .list(&io)
        .await
        .map_err(|e| CmdError::rbd("listing images failed", &e))?;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if !long {
        if ctx.g.json() {
            ctx.print_json(&json!(images.iter().map(|i| &i.name).collect::<Vec<_>>()));
        } else {
            for i in &images {
                println!("{}", i.name);
            }
        }
        return Ok(());
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("PARENT", Align::Left),
        ("FMT", Align::Right),
        ("PROT", Align::Left),
        ("LOCK", Align::Left),
    ]);
    let mut js = Vec::new();
    for entry in &images {
        // An image removed while listing is skipped, as Ceph does.
        let Ok(img) = ctx.open_in(&io, &entry.name, None, true).await else {
            continue;
        };
        let parent = img.parent_info().await.ok();
        let pstr = parent
            .as_ref()
            .map(|p| parent_string(&io, p))
            .unwrap_or_default();
        t.row(vec![
            entry.name.clone(),
            format_size(img.size()),
            pstr.clone(),
            "2".into(),
            String::new(),
            String::new(),
        ]);
        let mut o = json!({"image": entry.name, "id": entry.id, "size": img.size(), "format": 2});
        if let Some(p) = &parent {
            o["parent"] = json!({"pool": p.pool_name, "pool_namespace": p.namespace,
                "image": p.image_name, "snapshot": p.snap_name});
        }
        js.push(o);
        for s in img.snap_list().await.unwrap_or_default() {
            t.row(vec![
                format!("{}@{}", entry.name, s.name),
                format_size(s.size),
                pstr.clone(),
                "2".into(),
                if s.protected {
                    "yes".into()
                } else {
                    String::new()
                },
                String::new(),
            ]);
            js.push(
                json!({"image": entry.name, "id": entry.id, "snapshot": s.name,
                "snapshot_id": s.id, "size": s.size, "format": 2,
                "protected": if s.protected {"true"} else {"false"}}),
            );
        }
    }
    if ctx.g.json() {
        ctx.print_json(&Value::Array(js));
    } else if !images.is_empty() {
        print!("{}", t.render());
    }
    Ok(())
}

/// `rbd info`.
pub async fn info(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, true).await?;
    let st = img.stat();
    let parent = img.parent_info().await.ok();
    let protected = match &spec.snap {
        Some(s) => Some(img.snap_is_protected(s).await.unwrap_or(false)),
        None => None,
    };
    let ts = ctime(st.create_timestamp_ns);
    let (ats, mts) = (ctime(st.access_timestamp_ns), ctime(st.modify_timestamp_ns));
    if ctx.g.json() {
        let mut o = json!({
            "name": spec.image, "id": st.id, "size": st.size, "objects": st.num_objs,
            "order": st.order, "object_size": st.obj_size,
            "snapshot_count": st.snapshot_count,
            "block_name_prefix": st.block_name_prefix, "format": 2,
            "features": feature_names(st.features), "op_features": [],
            "flags": flag_names(st.flags),
            "create_timestamp": ts, "access_timestamp": ats, "modify_timestamp": mts,
        });
        if let Some(p) = protected {
            o["protected"] = json!(if p { "true" } else { "false" });
        }
        if let Some(p) = &parent {
            o["parent"] = json!({"pool": p.pool_name, "pool_namespace": p.namespace,
                "image": p.image_name, "id": p.image_id, "snapshot": p.snap_name,
                "trash": p.in_trash, "overlap": p.overlap});
        }
        ctx.print_json(&o);
        return Ok(());
    }
    let mut s = format!("rbd image '{}':\n", spec.image);
    s += &format!(
        "\tsize {} in {} objects\n",
        format_size(st.size),
        st.num_objs
    );
    s += &format!(
        "\torder {} ({} objects)\n",
        st.order,
        format_size(st.obj_size)
    );
    s += &format!("\tsnapshot_count: {}\n", st.snapshot_count);
    s += &format!("\tid: {}\n", st.id);
    s += &format!("\tblock_name_prefix: {}\n", st.block_name_prefix);
    s += "\tformat: 2\n";
    s += &format!("\tfeatures: {}\n", feature_names(st.features).join(", "));
    s += "\top_features: \n";
    s += &format!("\tflags: {}\n", flag_names(st.flags).join(", "));
    s += &format!("\tcreate_timestamp: {ts}\n");
    s += &format!("\taccess_timestamp: {ats}\n");
    s += &format!("\tmodify_timestamp: {mts}\n");
    if let Some(p) = protected {
        s += &format!("\tprotected: {}\n", if p { "True" } else { "False" });
    }
    if let Some(p) = &parent {
        let trash = if p.in_trash {
            format!(" (trash {})", p.image_id)
        } else {
            String::new()
        };
        s += &format!("\tparent: {}{trash}\n", parent_string(img.ioctx(), p));
        s += &format!("\toverlap: {}\n", format_size(p.overlap));
    }
    print!("{s}");
    Ok(())
}

async fn used_since(img: &Image, from: Option<&str>) -> CmdResult<u64> {
    let opts = DiffOptions {
        from_snap: from.map(str::to_string),
        include_parent: false,
        whole_object: true,
    };
    let ext = img
        .diff(0, img.size(), &opts)
        .await
        .map_err(|e| CmdError::rbd("du failed", &e))?;
    Ok(ext.iter().filter(|e| e.exists).map(|e| e.len).sum())
}

/// One `du` row: (name, snap, snap id, provisioned, used).
type DuRow = (String, Option<String>, Option<u64>, u64, u64);

async fn du_image(
    ctx: &Ctx,
    io: &IoCtx,
    name: &str,
    only_snap: Option<&str>,
    from: Option<&str>,
) -> CmdResult<Vec<DuRow>> {
    let head = ctx.open_in(io, name, None, true).await?;
    let snaps = head
        .snap_list()
        .await
        .map_err(|e| CmdError::rbd("du failed", &e))?;
    let mut rows = Vec::new();
    let mut prev: Option<String> = from.map(str::to_string);
    let mut started = from.is_none();
    for s in &snaps {
        if !started {
            started = Some(s.name.as_str()) == from;
            continue;
        }
        let img = ctx.open_in(io, name, Some(&s.name), true).await?;
        let used = used_since(&img, prev.as_deref()).await?;
        if only_snap.is_none() || only_snap == Some(s.name.as_str()) {
            rows.push((
                name.to_string(),
                Some(s.name.clone()),
                Some(s.id),
                s.size,
                used,
            ));
        }
        prev = Some(s.name.clone());
        if only_snap == Some(s.name.as_str()) {
            return Ok(rows);
        }
    }
    if only_snap.is_some() {
        return Ok(rows);
    }
    let used = used_since(&head, prev.as_deref()).await?;
    rows.push((name.to_string(), None, None, head.size(), used));
    Ok(rows)
}

/// `rbd du`.
pub async fn du(ctx: &Ctx, image: Option<&str>, from: Option<&str>) -> CmdResult {
    let rows = match image {
        Some(i) => {
            let spec = ctx.spec(i)?;
            let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
            du_image(ctx, &io, &spec.image, spec.snap.as_deref(), from).await?
        }
        None => {
            let ps = ctx.pool_spec(None)?;
            let io = ctx.ioctx(&ps.pool, &ps.namespace).await?;
            let mut list = ctx
                .rbd
                .list(&io)
                .await
                .map_err(|e| CmdError::rbd("du failed", &e))?;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            let mut rows = Vec::new();
            for e in list {
                // Skip images removed meanwhile.
                if let Ok(r) = du_image(ctx, &io, &e.name, None, from).await {
                    rows.extend(r);
                }
            }
            rows
        }
    };
    let total_p: u64 = rows.iter().filter(|r| r.1.is_none()).map(|r| r.3).sum();
    let total_u: u64 = rows.iter().map(|r| r.4).sum();
    if ctx.g.json() {
        let imgs: Vec<Value> = rows
            .iter()
            .map(|(n, s, id, p, u)| {
                let mut o = json!({"name": n, "provisioned_size": p, "used_size": u});
                if let (Some(s), Some(id)) = (s, id) {
                    o["snapshot"] = json!(s);
                    o["snapshot_id"] = json!(id);
                }
                o
            })
            .collect();
        ctx.print_json(&json!({"images": imgs, "total_provisioned_size": total_p,
            "total_used_size": total_u}));
        return Ok(());
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("PROVISIONED", Align::Right),
        ("USED", Align::Right),
    ]);
    for (n, s, _, p, u) in &rows {
        let name = match s {
            Some(s) => format!("{n}@{s}"),
            None => n.clone(),
        };
        t.row(vec![name, format_size(*p), format_size(*u)]);
    }
    if rows.len() > 1 {
        t.row(vec![
            "<TOTAL>".into(),
            format_size(total_p),
            format_size(total_u),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd resize`.
pub async fn resize(ctx: &Ctx, image: &str, size: &str, allow_shrink: bool) -> CmdResult {
    let spec = ctx.spec(image)?;
    let size = size_arg("--size", size, SizeUnit::MiB)?;
    let img = ctx.open(&spec, false).await?;
    if size < img.size() && !allow_shrink {
        return Err(CmdError::new(
            Errno::EINVAL,
            "shrinking an image is only allowed with the --allow-shrink flag",
        ));
    }
    let p = Progress::new(ctx.g.progress(), "Resizing image", 1);
    match img.resize(size).await {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            Err(CmdError::rbd("resize error", &e))
        }
    }
}

/// `rbd rm`.
pub async fn rm(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let io = ctx
        .rbd
        .ioctx(spec.pool.as_str(), &spec.namespace)
        .await
        .map_err(|e| CmdError::rbd("delete error", &e))?;
    let p = Progress::new(ctx.g.progress(), "Removing image", 1);
    // `rbd_move_to_trash_on_remove`: the image goes to the trash instead (as librbd).
    let removed = if ctx
        .conn
        .config
        .get_bool("rbd_move_to_trash_on_remove")
        .unwrap_or(false)
    {
        let delay = ctx
            .conn
            .config
            .get_u64("rbd_move_to_trash_on_remove_expire_seconds")
            .unwrap_or(0);
        ctx.rbd
            .trash_move(&io, &spec.image, delay)
            .await
            .map(|_| ())
    } else {
        ctx.rbd.remove(&io, &spec.image).await
    };
    match removed {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            if e.errno() == Errno::EBUSY && ctx.rbd.migration_status(&io, &spec.image).await.is_ok()
            {
                return Err(
                    CmdError::new(Errno::EBUSY, "error: image is being migrated").then(
                        "Use 'rbd migration abort' (or 'rbd migration commit') on it instead.",
                    ),
                );
            }
            Err(match e.errno() {
                Errno::EMLINK => CmdError::new(Errno::EMLINK, "error: image belongs to a group")
                    .then("Remove the image from the group and try again."),
                Errno::ENOTEMPTY => CmdError::new(
                    Errno::ENOTEMPTY,
                    "image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.",
                ),
                Errno::EBUSY => CmdError::new(Errno::EBUSY, "error: image still has watchers")
                    .then("This means the image is still open or the client using it crashed. Try again after closing/unmapping it or waiting 30s for the crashed client to timeout."),
                _ => CmdError::rbd("delete error", &e),
            })
        }
    }
}

/// Destination spec whose pool defaults to the source's (as Ceph's mv/cp/clone).
pub fn dest_spec(ctx: &Ctx, src: &ImageSpec, dest: &str) -> CmdResult<ImageSpec> {
    let mut d = ctx.spec(dest)?;
    if !dest.contains('/') && ctx.g.pool.is_none() {
        d.pool = src.pool.clone();
        d.namespace = src.namespace.clone();
    }
    if d.snap.is_some() {
        return Err(CmdError::new(
            Errno::EINVAL,
            "destination snapshot name specified for a command that doesn't use it",
        ));
    }
    Ok(d)
}

/// `rbd mv`.
pub async fn mv(ctx: &Ctx, src: &str, dest: &str) -> CmdResult {
    let s = ctx.spec(src)?;
    let d = dest_spec(ctx, &s, dest)?;
    if s.pool != d.pool || s.namespace != d.namespace {
        return Err(
            CmdError::new(Errno::EINVAL, "mv/rename across pools not supported")
                .then(format!("source pool: {} dest pool: {}", s.pool, d.pool)),
        );
    }
    let io = ctx.ioctx(&s.pool, &s.namespace).await?;
    ctx.rbd
        .rename(&io, &s.image, &d.image)
        .await
        .map_err(|e| CmdError::rbd("rename error", &e))
}

fn snap_spec(ctx: &Ctx, s: &str) -> CmdResult<(ImageSpec, String)> {
    let spec = ctx.spec(s)?;
    match spec.snap.clone() {
        Some(n) if !n.is_empty() => Ok((spec, n)),
        _ => Err(CmdError::new(
            Errno::EINVAL,
            "snapshot name was not specified",
        )),
    }
}

async fn open_head(ctx: &Ctx, spec: &ImageSpec) -> CmdResult<Image> {
    let mut head = spec.clone();
    head.snap = None;
    ctx.open(&head, false).await
}

/// `rbd snap create`.
pub async fn snap_create(ctx: &Ctx, s: &str) -> CmdResult {
    let (spec, snap) = snap_spec(ctx, s)?;
    let img = open_head(ctx, &spec).await?;
    let p = Progress::new(ctx.g.progress(), "Creating snap", 1);
    match img.snap_create(&snap).await {
        Ok(_) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            Err(CmdError::rbd("failed to create snapshot", &e))
        }
    }
}

/// `rbd snap ls`.
pub async fn snap_ls(ctx: &Ctx, image: &str, all: bool) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    let mut snaps = img
        .snap_list()
        .await
        .map_err(|e| CmdError::rbd("failed to list snapshots", &e))?;
    // Snapshots of other namespaces (groups') only with --all, as Ceph.
    if !all {
        snaps.retain(|s| s.group.is_none());
    }
    let namespace = |s: &quarry_rbd::SnapInfo| if s.group.is_some() { "group" } else { "user" };
    if ctx.g.json() {
        let v: Vec<Value> = snaps
            .iter()
            .map(|s| {
                let mut v = json!({"id": s.id, "name": s.name, "size": s.size,
                "protected": if s.protected {"true"} else {"false"},
                "timestamp": ctime(s.timestamp_ns)});
                if all {
                    v["namespace"] = json!({"type": namespace(s)});
                }
                v
            })
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    if snaps.is_empty() {
        return Ok(());
    }
    let mut cols = vec![
        ("SNAPID", Align::Right),
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("PROTECTED", Align::Left),
        ("TIMESTAMP", Align::Left),
    ];
    if all {
        cols.push(("NAMESPACE", Align::Left));
    }
    let mut t = Table::new(&cols);
    for s in &snaps {
        let mut row = vec![
            s.id.to_string(),
            s.name.clone(),
            format_size(s.size),
            if s.protected {
                "yes".into()
            } else {
                String::new()
            },
            ctime(s.timestamp_ns),
        ];
        if all {
            row.push(namespace(s).to_string());
        }
        t.row(row);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd snap rm`.
pub async fn snap_rm(ctx: &Ctx, s: &str) -> CmdResult {
    let (spec, snap) = snap_spec(ctx, s)?;
    let img = open_head(ctx, &spec).await?;
    let p = Progress::new(ctx.g.progress(), "Removing snap", 1);
    match img.snap_remove(&snap).await {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            if e.errno() == Errno::EBUSY && img.snap_is_protected(&snap).await.unwrap_or(false) {
                return Err(CmdError::new(
                    Errno::EBUSY,
                    format!("snapshot '{snap}' is protected from removal."),
                ));
            }
            Err(CmdError::rbd("failed to remove snapshot", &e))
        }
    }
}

/// `rbd snap rollback`.
pub async fn snap_rollback(ctx: &Ctx, s: &str) -> CmdResult {
    let (spec, snap) = snap_spec(ctx, s)?;
    let img = open_head(ctx, &spec).await?;
    let p = Progress::new(ctx.g.progress(), "Rolling back to snapshot", 1);
    match img.snap_rollback(&snap).await {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            Err(CmdError::rbd("rollback failed", &e))
        }
    }
}

/// `rbd snap protect`.
pub async fn snap_protect(ctx: &Ctx, s: &str) -> CmdResult {
    let (spec, snap) = snap_spec(ctx, s)?;
    let img = open_head(ctx, &spec).await?;
    match img.snap_is_protected(&snap).await {
        Ok(true) => return Err(CmdError::new(Errno::EBUSY, "snap is already protected")),
        Ok(false) => {}
        Err(e) => return Err(CmdError::rbd("protecting snap failed", &e)),
    }
    img.snap_protect(&snap)
        .await
        .map_err(|e| CmdError::rbd("protecting snap failed", &e))
}

/// `rbd snap unprotect`.
pub async fn snap_unprotect(ctx: &Ctx, s: &str) -> CmdResult {
    let (spec, snap) = snap_spec(ctx, s)?;
    let img = open_head(ctx, &spec).await?;
    match img.snap_is_protected(&snap).await {
        Ok(false) => return Err(CmdError::new(Errno::EINVAL, "snap is already unprotected")),
        Ok(true) => {}
        Err(e) => return Err(CmdError::rbd("unprotecting snap failed", &e)),
    }
    img.snap_unprotect(&snap)
        .await
        .map_err(|e| CmdError::rbd("unprotecting snap failed", &e))
}

/// `rbd snap purge`.
/// `rbd snap limit set --limit N` (`Some`) / `rbd snap limit clear`.
pub async fn snap_limit(ctx: &Ctx, image: &str, limit: Option<u64>) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    img.set_snap_limit(limit.unwrap_or(u64::MAX))
        .await
        .map_err(|e| {
            let what = if limit.is_some() {
                "setting snapshot limit failed"
            } else {
                "clearing snapshot limit failed"
            };
            CmdError::rbd(what, &e)
        })?;
    Ok(())
}

pub async fn snap_purge(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    let mut snaps = img
        .snap_list()
        .await
        .map_err(|e| CmdError::rbd("removing snaps failed", &e))?;
    // Group snapshots belong to their group (`rbd group snap rm`).
    snaps.retain(|s| s.group.is_none());
    let p = Progress::new(
        ctx.g.progress(),
        "Removing all snapshots",
        snaps.len() as u64,
    );
    let mut protected = Vec::new();
    for (i, s) in snaps.iter().enumerate() {
        if s.protected {
            protected.push(s.name.clone());
            continue;
        }
        if let Err(e) = img.snap_remove(&s.name).await {
            p.failed();
            return Err(CmdError::rbd("removing snaps failed", &e));
        }
        p.set(i as u64 + 1);
    }
    if !protected.is_empty() {
        p.failed();
        let names = protected
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let which = if protected.len() == 1 {
            "which is protected"
        } else {
            "which are protected"
        };
        return Err(CmdError::new(
            Errno::EBUSY,
            format!("error removing snapshot(s) {names}, {which} - these must be unprotected with `rbd snap unprotect`."),
        ));
    }
    p.done();
    Ok(())
}

/// `rbd snap rename`.
pub async fn snap_rename(ctx: &Ctx, src: &str, dest: &str) -> CmdResult {
    let (spec, from) = snap_spec(ctx, src)?;
    let to = match dest.split_once('@') {
        Some((img, s)) => {
            let d = ctx.spec(dest)?;
            if !img.is_empty() && (d.image != spec.image || d.pool != spec.pool) {
                return Err(CmdError::new(
                    Errno::EINVAL,
                    "source and destination image names must be the same",
                ));
            }
            s.to_string()
        }
        None => dest.to_string(),
    };
    let img = open_head(ctx, &spec).await?;
    img.snap_rename(&from, &to)
        .await
        .map_err(|e| CmdError::rbd("renaming snap failed", &e))
}

/// `rbd clone`.
pub async fn clone(ctx: &Ctx, parent: &str, child: &str, c: &CreateArgs) -> CmdResult {
    let (pspec, psnap) = snap_spec(ctx, parent)?;
    let cspec = dest_spec(ctx, &pspec, child)?;
    let opts = create_opts(ctx, c, "clone error")?;
    let pio = ctx.ioctx(&pspec.pool, &pspec.namespace).await?;
    let cio = ctx.ioctx(&cspec.pool, &cspec.namespace).await?;
    ctx.rbd
        .clone(&pio, &pspec.image, &psnap, &cio, &cspec.image, &opts)
        .await
        .map_err(|e| CmdError::rbd("clone error", &e))
}

fn child_name(c: &quarry_rbd::ChildInfo) -> String {
    if c.namespace.is_empty() {
        format!("{}/{}", c.pool_name, c.image_name)
    } else {
        format!("{}/{}/{}", c.pool_name, c.namespace, c.image_name)
    }
}

/// `rbd children`.
pub async fn children(
    ctx: &Ctx,
    image: &str,
    snap: Option<&str>,
    all: bool,
    descendants: bool,
) -> CmdResult {
    let mut spec = ctx.spec(image)?;
    if let Some(s) = snap {
        spec.snap = Some(s.to_string());
    }
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    // (io, image, snapshots to list) work queue; descendants follow every child's snapshots.
    let mut out = Vec::new();
    let mut queue = vec![(io, spec.image.clone(), spec.snap.clone())];
    while let Some((io, name, snap)) = queue.pop() {
        let snaps = match snap {
            Some(s) => vec![s],
            None => {
                let img = ctx.open_in(&io, &name, None, true).await?;
                img.snap_list()
                    .await
                    .map_err(|e| CmdError::rbd("listing children failed", &e))?
                    .into_iter()
                    .map(|s| s.name)
                    .collect()
            }
        };
        for s in snaps {
            let kids = ctx
                .rbd
                .children(&io, &name, &s)
                .await
                .map_err(|e| CmdError::rbd("listing children failed", &e))?;
            for k in kids {
                if k.in_trash && !all {
                    continue;
                }
                if descendants && !k.in_trash {
                    if let Ok(kio) = ctx.ioctx(&k.pool_name, &k.namespace).await {
                        queue.push((kio, k.image_name.clone(), None));
                    }
                }
                out.push(k);
            }
        }
    }
    out.sort_by_key(child_name);
    if ctx.g.json() {
        let v: Vec<Value> = out
            .iter()
            .map(|c| {
                let mut j = json!({"pool": c.pool_name, "pool_namespace": c.namespace, "image": c.image_name});
                if all {
                    j["id"] = json!(c.image_id);
                    j["trash"] = json!(c.in_trash);
                }
                j
            })
            .collect();
        ctx.print_json(&Value::Array(v));
    } else {
        for c in &out {
            if c.in_trash {
                println!("{} (trash {})", child_name(c), c.image_id);
            } else {
                println!("{}", child_name(c));
            }
        }
    }
    Ok(())
}

/// `rbd flatten`.
pub async fn flatten(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, false).await?;
    let p = Progress::new(ctx.g.progress(), "Image flatten", 1);
    let r = img
        .flatten(|done, total| {
            if let Some(b) = &p.bar {
                b.set_length(total.max(1));
            }
            p.set(done);
        })
        .await;
    p.finish(r.map_err(|e| CmdError::rbd("flatten error", &e)))
}

/// `rbd sparsify [--sparse-size SIZE]`.
pub async fn sparsify(ctx: &Ctx, image: &str, sparse_size: &str) -> CmdResult {
    let size = size_arg("--sparse-size", sparse_size, SizeUnit::Bytes)?;
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, false).await?;
    let p = Progress::new(ctx.g.progress(), "Image sparsify", 1);
    let r = img
        .sparsify(size, |done, total| {
            if let Some(b) = &p.bar {
                b.set_length(total.max(1));
            }
            p.set(done);
        })
        .await;
    p.finish(r.map_err(|e| CmdError::rbd("sparsify error", &e)))
}

/// `rbd encryption format`: a LUKS header at the image's start, as
/// librbd's `rbd_encryption_format` writes it (see `quarry-luks`).
pub async fn encryption_format(
    ctx: &Ctx,
    image: &str,
    format: &str,
    passphrase_file: &str,
    cipher_alg: Option<&str>,
) -> CmdResult {
    let fmt = match format {
        "luks1" => quarry_luks::Format::Luks1,
        "luks2" => quarry_luks::Format::Luks2,
        _ => {
            return Err(CmdError::new(
                Errno::EINVAL,
                format!("invalid encryption format: {format} (luks1 or luks2)"),
            ))
        }
    };
    let alg = match cipher_alg.unwrap_or("aes-256") {
        "aes-128" => quarry_luks::Alg::Aes128,
        "aes-256" => quarry_luks::Alg::Aes256,
        a => {
            return Err(CmdError::new(
                Errno::EINVAL,
                format!("invalid cipher algorithm: {a} (aes-128 or aes-256)"),
            ))
        }
    };
    let mut pass = zeroize::Zeroizing::new(std::fs::read(passphrase_file).map_err(|e| {
        CmdError::new(
            Errno::from_code(e.raw_os_error().unwrap_or(libc::EIO)),
            format!("error reading passphrase file {passphrase_file}: {e}"),
        )
    })?);
    if pass.last() == Some(&b'\n') {
        pass.pop();
    }
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    let st = img.stat();
    let (object_size, size) = (st.obj_size, st.size);
    let made = tokio::task::spawn_blocking(move || {
        quarry_luks::format(fmt, alg, &pass, object_size, size)
    })
    .await
    .map_err(|e| CmdError::new(Errno::EIO, format!("encryption format error: {e}")))?;
    let (header, _) = made.map_err(|e| {
        CmdError::errno("encryption format error", Errno::from_code(e.errno())).then(e.to_string())
    })?;
    img.write(0, bytes::Bytes::from(header))
        .await
        .map_err(|e| CmdError::rbd("encryption format error", &e))?;
    img.flush()
        .await
        .map_err(|e| CmdError::rbd("encryption format error", &e))
}

/// `rbd image-meta get`.
pub async fn meta_get(ctx: &Ctx, image: &str, key: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    let v = img
        .metadata_get(key)
        .await
        .map_err(|e| CmdError::rbd(&format!("failed to get metadata {key} of image "), &e))?;
    println!("{}", String::from_utf8_lossy(&v));
    Ok(())
}

/// `rbd image-meta set`.
pub async fn meta_set(ctx: &Ctx, image: &str, key: &str, value: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    img.metadata_set(key, value.as_bytes().to_vec())
        .await
        .map_err(|e| CmdError::rbd(&format!("failed to set metadata {key} of image "), &e))
}

/// `rbd image-meta remove`.
pub async fn meta_remove(ctx: &Ctx, image: &str, key: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    img.metadata_remove(key)
        .await
        .map_err(|e| CmdError::rbd(&format!("failed to remove metadata {key} of image "), &e))
}

/// `rbd image-meta list`.
pub async fn meta_list(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = open_head(ctx, &spec).await?;
    let m = img
        .metadata_list("", 0)
        .await
        .map_err(|e| CmdError::rbd("failed to list metadata of image", &e))?;
    if ctx.g.json() {
        let o: serde_json::Map<String, Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
            .collect();
        ctx.print_json(&Value::Object(o));
        return Ok(());
    }
    if m.is_empty() {
        println!("There are 0 metadata on this image.");
        return Ok(());
    }
    if m.len() == 1 {
        println!("There is 1 metadatum on this image:\n");
    } else {
        println!("There are {} metadata on this image:\n", m.len());
    }
    let mut t = Table::new(&[("Key", Align::Left), ("Value", Align::Left)]);
    for (k, v) in &m {
        t.row(vec![k.clone(), String::from_utf8_lossy(v).into_owned()]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd status`.
pub async fn status(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    let w = ctx
        .rbd
        .watchers(&io, &spec.image)
        .await
        .map_err(|e| CmdError::rbd(&format!("error opening image {}", spec.image), &e))?;
    let migration = match ctx.rbd.migration_status(&io, &spec.image).await {
        Ok(m) => Some(m),
        Err(quarry_rbd::RbdError::Invalid { .. }) => None,
        Err(e) => return Err(CmdError::rbd("getting migration status failed", &e)),
    };
    let end = |e: &quarry_rbd::MigrationEnd| {
        let ns = if e.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", e.namespace)
        };
        format!("{}/{ns}{} ({})", e.pool_name, e.name, e.id)
    };
    if ctx.g.json() {
        let v: Vec<Value> = w
            .iter()
            .map(|w| json!({"address": w.addr, "client": w.client, "cookie": w.cookie}))
            .collect();
        let mut out = json!({"watchers": v});
        if let Some(m) = &migration {
            out["migration"] = json!({
                "source_pool_name": m.source.pool_name,
                "source_pool_namespace": m.source.namespace,
                "source_image_name": m.source.name,
                "source_image_id": m.source.id,
                "dest_pool_name": m.dest.pool_name,
                "dest_pool_namespace": m.dest.namespace,
                "dest_image_name": m.dest.name,
                "dest_image_id": m.dest.id,
                "state": m.state.label(),
                "state_description": "",
            });
        }
        ctx.print_json(&out);
        return Ok(());
    } else if w.is_empty() {
        println!("Watchers: none");
    } else {
        println!("Watchers:");
        for w in &w {
            println!(
                "\twatcher={} client.{} cookie={}",
                w.addr, w.client, w.cookie
            );
        }
    }
    if let Some(m) = &migration {
        println!("Migration:");
        println!("\tsource: {}", end(&m.source));
        println!("\tdestination: {}", end(&m.dest));
        println!("\tstate: {}", m.state.label());
    }
    Ok(())
}

/// `rbd pool init [--force]`: check the pool and enable the `rbd`
/// application on it (beside another one only with `--force`, as Ceph).
/// `rbd pool stats`: Ceph's lines (or JSON), sizes as the most each image
/// may hold (its size or a larger snapshot's).
pub async fn pool_stats(ctx: &Ctx, pool: Option<&str>) -> CmdResult {
    let ps = ctx.pool_spec(pool)?;
    let io = ctx.ioctx(&ps.pool, &ps.namespace).await?;
    let st = ctx
        .rbd
        .pool_stats(&io)
        .await
        .map_err(|e| CmdError::rbd("failed to query pool stats", &e))?;
    let (i, t) = (st.images, st.trash);
    if ctx.g.json() {
        ctx.print_json(&json!({
            "images": {"count": i.count, "provisioned_bytes": i.max_provisioned_bytes,
                       "snap_count": i.snapshots},
            "trash": {"count": t.count, "provisioned_bytes": t.max_provisioned_bytes,
                      "snap_count": t.snapshots},
        }));
        return Ok(());
    }
    let in_trash = |v: String| {
        if t.count > 0 {
            format!(" ({v} in trash)")
        } else {
            String::new()
        }
    };
    println!("Total Images: {}{}", i.count, in_trash(t.count.to_string()));
    println!(
        "Total Snapshots: {}{}",
        i.snapshots,
        in_trash(t.snapshots.to_string())
    );
    println!(
        "Provisioned Size: {}{}",
        format_size(i.max_provisioned_bytes),
        in_trash(format_size(t.max_provisioned_bytes))
    );
    Ok(())
}

pub async fn pool_init(ctx: &Ctx, pool: Option<&str>, force: bool) -> CmdResult {
    let name = pool
        .map(str::to_string)
        .unwrap_or_else(|| ctx.g.default_pool());
    ctx.ioctx(&name, "").await?;
    if let Some(monc) = &ctx.conn.monc {
        monc.command(quarry_monc::MonCommand::PoolApplication {
            pool: name.clone(),
            op: quarry_monc::AppOp::Enable {
                app: "rbd".into(),
                force,
            },
        })
        .await
        .map_err(|e| CmdError::errno("failed to enable rbd application", e.errno()))?;
    }
    Ok(())
}

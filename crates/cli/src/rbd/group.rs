//! `rbd group ...`: consistency groups (create, list, rename, remove),
//! their images and their crash-consistent snapshots, with Ceph's outputs
//! and error texts.

use quarry_common::spec::ImageSpec;
use quarry_common::Errno;
use quarry_rbd::{GroupImageState, GroupSnapState, IoCtx};
use serde_json::{json, Value};

use super::{Align, CmdError, CmdResult, Ctx, Progress, Table};

fn failed(what: &str, e: &quarry_rbd::RbdError) -> CmdError {
    CmdError::rbd(what, e)
}

/// A group spec `[pool/[namespace/]]group[@snap]`, with its IoCtx.
async fn group_io(ctx: &Ctx, spec: &str, snap: bool) -> CmdResult<(ImageSpec, IoCtx)> {
    let s = ctx.spec(spec)?;
    match (&s.snap, snap) {
        (None, true) => {
            return Err(CmdError::new(
                Errno::EINVAL,
                "group snapshot name was not specified",
            ))
        }
        (Some(_), false) => {
            return Err(CmdError::new(
                Errno::EINVAL,
                "snapshot name specified for a command that doesn't use it",
            ))
        }
        _ => {}
    }
    let io = ctx.ioctx(&s.pool, &s.namespace).await?;
    Ok((s, io))
}

fn snap_of(s: &ImageSpec) -> &str {
    s.snap.as_deref().unwrap_or_default()
}

/// `rbd group create GROUP`.
pub async fn create(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, false).await?;
    ctx.rbd
        .group_create(&io, &s.image)
        .await
        .map_err(|e| failed("create error", &e))
}

/// `rbd group rm GROUP`.
pub async fn remove(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, false).await?;
    ctx.rbd
        .group_remove(&io, &s.image)
        .await
        .map_err(|e| failed("remove error", &e))
}

/// `rbd group ls [POOL[/NAMESPACE]]`.
pub async fn list(ctx: &Ctx, pool: Option<&str>) -> CmdResult {
    let ps = ctx.pool_spec(pool)?;
    let io = ctx.ioctx(&ps.pool, &ps.namespace).await?;
    let names = ctx
        .rbd
        .group_list(&io)
        .await
        .map_err(|e| failed("listing groups failed", &e))?;
    if ctx.g.json() {
        ctx.print_json(&Value::Array(
            names.into_iter().map(Value::String).collect(),
        ));
        return Ok(());
    }
    for n in names {
        println!("{n}");
    }
    Ok(())
}

/// `rbd group rename SRC DST` (within one pool and namespace).
pub async fn rename(ctx: &Ctx, src: &str, dst: &str) -> CmdResult {
    let (s, io) = group_io(ctx, src, false).await?;
    let mut d = ctx.spec(dst)?;
    if !dst.contains('/') && ctx.g.pool.is_none() {
        d.pool = s.pool.clone();
        d.namespace = s.namespace.clone();
    }
    if d.pool != s.pool {
        return Err(
            CmdError::new(Errno::EINVAL, "group rename across pools not supported")
                .then(format!("source pool: {}, dest pool: {}", s.pool, d.pool)),
        );
    }
    if d.namespace != s.namespace {
        return Err(CmdError::new(
            Errno::EINVAL,
            "group rename across namespaces not supported",
        )
        .then(format!(
            "source namespace: {}, dest namespace: {}",
            s.namespace, d.namespace
        )));
    }
    ctx.rbd
        .group_rename(&io, &s.image, &d.image)
        .await
        .map_err(|e| failed("failed to rename group", &e))
}

/// The group's and the image's IoCtx for `rbd group image add|rm`.
async fn group_and_image(
    ctx: &Ctx,
    group: &str,
    image: &str,
) -> CmdResult<(ImageSpec, IoCtx, ImageSpec, IoCtx)> {
    let (g, gio) = group_io(ctx, group, false).await?;
    let i = ctx.spec(image)?;
    if g.namespace != i.namespace {
        return Err(CmdError::new(
            Errno::EINVAL,
            "group and image namespace must match.",
        ));
    }
    let iio = ctx.ioctx(&i.pool, &i.namespace).await?;
    Ok((g, gio, i, iio))
}

/// `rbd group image add GROUP IMAGE`.
pub async fn image_add(ctx: &Ctx, group: &str, image: &str) -> CmdResult {
    let (g, gio, i, iio) = group_and_image(ctx, group, image).await?;
    ctx.rbd
        .group_image_add(&gio, &g.image, &iio, &i.image)
        .await
        .map_err(|e| failed("add image error", &e))
}

/// `rbd group image rm GROUP IMAGE`.
pub async fn image_remove(ctx: &Ctx, group: &str, image: &str) -> CmdResult {
    let (g, gio, i, iio) = group_and_image(ctx, group, image).await?;
    ctx.rbd
        .group_image_remove(&gio, &g.image, &iio, &i.image)
        .await
        .map_err(|e| failed("remove image error", &e))
}

/// `rbd group image ls GROUP`: `pool/[namespace/]image state` per line
/// (the state is empty for attached images, as Ceph prints it).
pub async fn image_list(ctx: &Ctx, group: &str) -> CmdResult {
    let (g, gio) = group_io(ctx, group, false).await?;
    let images = ctx
        .rbd
        .group_image_list(&gio, &g.image)
        .await
        .map_err(|e| failed("listing group images failed", &e))?;
    let state_num = |s: GroupImageState| match s {
        GroupImageState::Attached => 0,
        GroupImageState::Incomplete => 1,
    };
    if ctx.g.json() {
        let v: Vec<Value> = images
            .iter()
            .map(|i| {
                json!({"image": i.name, "pool": i.pool_name,
                    "namespace": gio.namespace, "state": state_num(i.state)})
            })
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    for i in images {
        let ns = if gio.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", gio.namespace)
        };
        let state = match i.state {
            GroupImageState::Attached => "",
            GroupImageState::Incomplete => "incomplete",
        };
        println!("{}/{ns}{} {state}", i.pool_name, i.name);
    }
    Ok(())
}

/// `rbd group snap create GROUP@SNAP`.
pub async fn snap_create(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, true).await?;
    ctx.rbd
        .group_snap_create(&io, &s.image, snap_of(&s))
        .await
        .map_err(|e| failed("failed to create group snapshot", &e))
}

/// `rbd group snap rm GROUP@SNAP`.
pub async fn snap_remove(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, true).await?;
    ctx.rbd
        .group_snap_remove(&io, &s.image, snap_of(&s))
        .await
        .map_err(|e| failed("failed to remove group snapshot", &e))
}

/// `rbd group snap rename GROUP@SNAP NEW`.
pub async fn snap_rename(ctx: &Ctx, spec: &str, dst: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, true).await?;
    ctx.rbd
        .group_snap_rename(&io, &s.image, snap_of(&s), dst)
        .await
        .map_err(|e| failed("failed to rename group snapshot", &e))
}

/// `rbd group snap ls GROUP`: NAME and STATUS columns (Ceph 16).
pub async fn snap_list(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, false).await?;
    let snaps = ctx
        .rbd
        .group_snap_list(&io, &s.image)
        .await
        .map_err(|e| failed("listing group snapshots failed", &e))?;
    let state = |st: GroupSnapState| match st {
        GroupSnapState::Complete => "complete",
        GroupSnapState::Incomplete => "incomplete",
    };
    if ctx.g.json() {
        let v: Vec<Value> = snaps
            .iter()
            .map(|s| json!({"snapshot": s.name, "state": state(s.state)}))
            .collect();
        ctx.print_json(&Value::Array(v));
        return Ok(());
    }
    if snaps.is_empty() {
        return Ok(());
    }
    let mut t = Table::new(&[("NAME", Align::Left), ("STATUS", Align::Left)]);
    for s in &snaps {
        t.row(vec![s.name.clone(), state(s.state).to_string()]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd group snap rollback GROUP@SNAP`.
pub async fn snap_rollback(ctx: &Ctx, spec: &str) -> CmdResult {
    let (s, io) = group_io(ctx, spec, true).await?;
    let p = Progress::new(ctx.g.progress(), "Rolling back to group snapshot", 1);
    let r = ctx
        .rbd
        .group_snap_rollback(&io, &s.image, snap_of(&s))
        .await
        .map_err(|e| failed("rollback group to snapshot failed", &e));
    p.finish(r)
}

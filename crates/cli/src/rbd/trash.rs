//! `rbd trash mv|ls|rm|restore|purge`: deferred image removal, with Ceph's
//! outputs and error texts.

use quarry_common::Errno;
use quarry_rbd::{IoCtx, OpenOptions, RbdError, TrashEntry};
use serde_json::json;

use super::{ctime, Align, CmdError, CmdResult, Ctx, Progress, Table};

/// Unix seconds of a date as `date --date` reads it (`now`, `+1 week`,
/// `2026-12-01 10:00`), as Ceph's tool asks `/bin/date`.
fn parse_date(s: &str) -> CmdResult<u64> {
    let bad = |why: String| CmdError::new(Errno::EINVAL, format!("invalid date '{s}': {why}"));
    let out = std::process::Command::new("date")
        .arg(format!("--date={s}"))
        .arg("+%s")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| CmdError::new(Errno::EINVAL, format!("error calling /bin/date: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(bad(err.trim().trim_start_matches("date: ").to_string()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: i64 = text
        .trim()
        .parse()
        .map_err(|_| bad(format!("date printed '{}'", text.trim())))?;
    u64::try_from(secs).map_err(|_| bad("before 1970".into()))
}

/// The pool, namespace and id of `[pool/[namespace/]]id` or `--image-id`.
async fn id_target(ctx: &Ctx, pos: Option<&str>, opt: Option<&str>) -> CmdResult<(IoCtx, String)> {
    let s = match (pos, opt) {
        (Some(p), _) => p,
        (None, Some(o)) => o,
        (None, None) => {
            return Err(CmdError::new(Errno::EINVAL, "image id was not specified"));
        }
    };
    let spec = ctx.spec(s)?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    Ok((io, spec.image))
}

/// `rbd trash mv [--expires-at DATE] IMAGE`.
pub async fn mv(ctx: &Ctx, image: &str, expires_at: Option<&str>) -> CmdResult {
    let spec = ctx.spec(image)?;
    let now = quarry_rbd_now();
    let delay = match expires_at {
        None => 0,
        Some(d) => {
            let at = parse_date(d)?;
            if at < now {
                return Err(CmdError::new(
                    Errno::EINVAL,
                    "cannot use a date in the past as an expiration date",
                ));
            }
            at - now
        }
    };
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    ctx.rbd
        .trash_move(&io, &spec.image, delay)
        .await
        .map(|_| ())
        .map_err(|e| CmdError::rbd("deferred delete error", &e))
}

fn quarry_rbd_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `protected until ...` / `expired at ...`, as Ceph's `trash ls -l`.
fn status(e: &TrashEntry, now: u64) -> String {
    let t = ctime(e.deferment_end_time.saturating_mul(1_000_000_000));
    if now < e.deferment_end_time {
        format!("protected until {t}")
    } else {
        format!("expired at {t}")
    }
}

/// `rbd trash ls [-l] [-a] [POOL[/NAMESPACE]]`.
pub async fn ls(ctx: &Ctx, pool: Option<&str>, long: bool, all: bool) -> CmdResult {
    let ps = ctx.pool_spec(pool)?;
    let io = ctx.ioctx(&ps.pool, &ps.namespace).await?;
    let entries = ctx
        .rbd
        .trash_list(&io)
        .await
        .map_err(|e| CmdError::rbd("trash list", &e))?;
    // Only user-trashed images unless --all (the only source Quarry has today).
    let entries: Vec<TrashEntry> = entries
        .into_iter()
        .filter(|e| all || e.source == quarry_rbd::TrashSource::User)
        .collect();
    if !long {
        if ctx.g.json() {
            ctx.print_json(&json!(entries
                .iter()
                .map(|e| json!({"id": e.id, "name": e.name}))
                .collect::<Vec<_>>()));
        } else {
            for e in &entries {
                println!("{} {}", e.id, e.name);
            }
        }
        return Ok(());
    }
    let now = quarry_rbd_now();
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("SOURCE", Align::Left),
        ("DELETED_AT", Align::Left),
        ("STATUS", Align::Left),
        ("PARENT", Align::Left),
    ]);
    let mut js = Vec::new();
    for e in &entries {
        let opts = OpenOptions {
            read_only: true,
            snap: None,
        };
        // An image removed while listing is skipped, as Ceph does.
        let img = match ctx.rbd.open_by_id(&io, &e.id, &opts).await {
            Ok(img) => img,
            Err(RbdError::NotFound { .. }) => continue,
            Err(err) => {
                eprintln!("rbd: error opening {}: {}", e.id, err.errno());
                continue;
            }
        };
        ctx.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(img.closer());
        let parent = img.parent_info().await.ok();
        let deleted = ctime(e.deletion_time.saturating_mul(1_000_000_000));
        let st = status(e, now);
        let pstr = parent
            .as_ref()
            .map(|p| super::cmds::parent_string(&io, p))
            .unwrap_or_default();
        t.row(vec![
            e.id.clone(),
            e.name.clone(),
            e.source.label().into(),
            deleted.clone(),
            st.clone(),
            pstr,
        ]);
        let mut j = json!({"id": e.id, "name": e.name, "source": e.source.label(),
            "deleted_at": deleted, "status": st});
        if let Some(p) = &parent {
            j["parent"] = json!({"pool": p.pool_name, "pool_namespace": p.namespace,
                "image": p.image_name, "snapshot": p.snap_name});
        }
        js.push(j);
    }
    if ctx.g.json() {
        ctx.print_json(&json!(js));
    } else if !entries.is_empty() {
        print!("{}", t.render());
    }
    Ok(())
}

/// `rbd trash rm [--force] [POOL/[NAMESPACE/]]ID`.
pub async fn rm(ctx: &Ctx, pos: Option<&str>, opt: Option<&str>, force: bool) -> CmdResult {
    let (io, id) = id_target(ctx, pos, opt).await?;
    let p = Progress::new(ctx.g.progress(), "Removing image", 1);
    match ctx.rbd.trash_remove(&io, &id, force).await {
        Ok(()) => {
            p.done();
            Ok(())
        }
        Err(e) => {
            p.failed();
            if let Some(err) = migration_source(ctx, &io, &id, &e).await {
                return Err(err);
            }
            Err(match e.errno() {
                Errno::ENOTEMPTY => CmdError::new(
                    Errno::ENOTEMPTY,
                    "image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.",
                ),
                Errno::EUCLEAN => CmdError::new(Errno::EUCLEAN, "error: image not fully moved to trash."),
                Errno::EBUSY => CmdError::new(Errno::EBUSY, "error: image still has watchers")
                    .then("This means the image is still open or the client using it crashed. Try again after closing/unmapping it or waiting 30s for the crashed client to timeout."),
                Errno::EPERM => CmdError::new(
                    Errno::EPERM,
                    "Deferment time has not expired, please use --force if you really want to remove the image",
                ),
                _ => CmdError::rbd("remove error", &e),
            })
        }
    }
}

/// The error for an `EBUSY` about a live migration's source (which leaves
/// the trash only through `rbd migration commit` or `abort`).
async fn migration_source(ctx: &Ctx, io: &IoCtx, id: &str, e: &RbdError) -> Option<CmdError> {
    if e.errno() != Errno::EBUSY {
        return None;
    }
    let entry = ctx.rbd.trash_get(io, id).await.ok()?;
    (entry.source == quarry_rbd::TrashSource::Migration).then(|| {
        CmdError::new(
            Errno::EBUSY,
            "error: image is the source of a live migration",
        )
        .then("Use 'rbd migration commit' or 'rbd migration abort' on it instead.")
    })
}

/// `rbd trash restore [--image NAME] [POOL/[NAMESPACE/]]ID`.
pub async fn restore(
    ctx: &Ctx,
    pos: Option<&str>,
    opt: Option<&str>,
    name: Option<&str>,
) -> CmdResult {
    let (io, id) = id_target(ctx, pos, opt).await?;
    let r = ctx.rbd.trash_restore(&io, &id, name).await;
    if let Err(e) = &r {
        if let Some(err) = migration_source(ctx, &io, &id, e).await {
            return Err(err);
        }
    }
    r.map_err(|e| match e.errno() {
            Errno::ENOENT => CmdError::new(Errno::ENOENT, "error: image does not exist in trash"),
            Errno::EEXIST => CmdError::new(
                Errno::EEXIST,
                "error: an image with the same name already exists, try again with with a different name",
            ),
            _ => CmdError::rbd("restore error", &e),
        })
}

/// `rbd trash purge [--expired-before DATE] [POOL[/NAMESPACE]]`.
pub async fn purge(
    ctx: &Ctx,
    pool: Option<&str>,
    expired_before: Option<&str>,
    threshold: Option<f32>,
) -> CmdResult {
    if threshold.is_some() {
        return Err(CmdError::new(
            Errno::EOPNOTSUPP,
            "--threshold is not supported by Quarry; use --expired-before",
        ));
    }
    let ts = expired_before.map(parse_date).transpose()?;
    let ps = ctx.pool_spec(pool)?;
    let io = ctx.ioctx(&ps.pool, &ps.namespace).await?;
    let p = Progress::new(ctx.g.progress(), "Removing images", 1);
    match ctx.rbd.trash_purge(&io, ts).await {
        Ok(r) if r.kept.is_empty() => {
            p.done();
            Ok(())
        }
        Ok(r) => {
            p.failed();
            // Ceph returns the first such error; name every image kept.
            let (first_id, first) = &r.kept[0];
            let mut err = CmdError::new(
                first.errno(),
                format!("image {first_id} was not removed: {first}"),
            );
            for (id, e) in &r.kept[1..] {
                err = err.then(format!("image {id} was not removed: {e}"));
            }
            Err(err)
        }
        Err(e) => {
            p.failed();
            Err(CmdError::rbd("trash purge", &e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_like_date_and_bad_ones_are_einval() {
        assert_eq!(parse_date("@1700000000").ok(), Some(1_700_000_000));
        assert_eq!(parse_date("1970-01-02 00:00 UTC").ok(), Some(86_400));
        let e = parse_date("not a date at all").unwrap_err();
        assert_eq!(e.code, Errno::EINVAL.code());
        assert!(
            e.lines[0].starts_with("invalid date 'not a date at all': "),
            "{e:?}"
        );
    }
}

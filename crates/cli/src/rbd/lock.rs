//! `rbd lock add|ls|rm`: the locks held on an image (advisory locks, and
//! the exclusive-lock feature's lock, listed and broken the same way, as
//! librbd shows them).

use quarry_common::Errno;
use serde_json::json;

use super::{Align, CmdError, CmdResult, Ctx, Table};

/// `rbd lock ls IMAGE`.
pub async fn ls(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, true).await?;
    let locks = img
        .list_lockers()
        .await
        .map_err(|e| CmdError::rbd("listing locks failed", &e))?;
    if ctx.g.json() {
        let v: Vec<_> = locks
            .lockers
            .iter()
            .map(|l| json!({"id": l.cookie, "locker": l.client, "address": l.addr}))
            .collect();
        ctx.print_json(&json!(v));
        return Ok(());
    }
    let n = locks.lockers.len();
    if n == 0 {
        return Ok(());
    }
    println!(
        "There {} {n} {} lock{} on this image.",
        if n == 1 { "is" } else { "are" },
        if locks.exclusive {
            "exclusive"
        } else {
            "shared"
        },
        if n == 1 { "" } else { "s" }
    );
    if !locks.exclusive {
        println!("Lock tag: {}", locks.tag);
    }
    let mut t = Table::new(&[
        ("Locker", Align::Left),
        ("ID", Align::Left),
        ("Address", Align::Left),
    ]);
    for l in &locks.lockers {
        t.row(vec![l.client.clone(), l.cookie.clone(), l.addr.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd lock add [--shared TAG] IMAGE LOCK_ID`.
pub async fn add(ctx: &Ctx, image: &str, lock_id: &str, shared: Option<&str>) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, false).await?;
    let r = match shared {
        Some(tag) => img.lock_shared(lock_id, tag).await,
        None => img.lock_exclusive(lock_id).await,
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.errno(), Errno::EBUSY | Errno::EEXIST) => Err(CmdError::new(
            e.errno(),
            match shared {
                Some(_) => "lock is already held by someone else with a different tag",
                None => "lock is already held by someone else",
            },
        )),
        Err(e) => Err(CmdError::rbd("taking lock failed", &e)),
    }
}

/// `rbd lock rm IMAGE LOCK_ID LOCKER`: break the lock LOCKER holds under
/// LOCK_ID (as `rbd lock ls` shows them).
pub async fn rm(ctx: &Ctx, image: &str, lock_id: &str, locker: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let img = ctx.open(&spec, false).await?;
    img.break_lock(locker, lock_id)
        .await
        .map_err(|e| CmdError::rbd("releasing lock failed", &e))
}

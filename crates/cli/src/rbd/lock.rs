//! `rbd lock ls|rm`: the exclusive lock of an image (who holds it; break
//! a dead holder's lock by hand).

use serde_json::json;

use super::{Align, CmdError, CmdResult, Ctx, Table};

/// `rbd lock ls IMAGE`.
pub async fn ls(ctx: &Ctx, image: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    let owners = ctx
        .rbd
        .lock_owners(&io, &spec.image)
        .await
        .map_err(|e| CmdError::rbd("error listing locks", &e))?;
    if ctx.g.json() {
        let v: Vec<_> = owners
            .iter()
            .map(|o| json!({"id": o.cookie, "locker": o.entity, "address": o.addr}))
            .collect();
        ctx.print_json(&json!(v));
        return Ok(());
    }
    if owners.is_empty() {
        return Ok(());
    }
    println!("There is 1 exclusive lock on this image.");
    let mut t = Table::new(&[
        ("Locker", Align::Left),
        ("ID", Align::Left),
        ("Address", Align::Left),
    ]);
    for o in &owners {
        t.row(vec![o.entity.clone(), o.cookie.clone(), o.addr.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `rbd lock rm IMAGE LOCK_ID LOCKER`: break the lock held by LOCKER.
pub async fn rm(ctx: &Ctx, image: &str, _lock_id: &str, locker: &str) -> CmdResult {
    let spec = ctx.spec(image)?;
    let io = ctx.ioctx(&spec.pool, &spec.namespace).await?;
    ctx.rbd
        .lock_break(&io, &spec.image, locker)
        .await
        .map_err(|e| CmdError::rbd("rbd: releasing lock failed", &e))
}

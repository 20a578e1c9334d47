//! `rbd migration prepare|execute|commit|abort`: live migration of an
//! image to another pool, namespace or name, with Ceph's outputs and
//! error texts (the reason follows on a second line).

use quarry_rbd::RbdError;

use super::cmds::{create_opts, dest_spec};
use super::{CmdError, CmdResult, CreateArgs, Ctx, Progress};

fn failed(what: &str, e: &RbdError) -> CmdError {
    CmdError::rbd(what, e).then(e.to_string())
}

/// `rbd migration prepare SRC [DST] [--dest-pool P] [create options]`.
pub async fn prepare(
    ctx: &Ctx,
    src: &str,
    dest: Option<&str>,
    dest_pool: Option<&str>,
    c: &CreateArgs,
) -> CmdResult {
    let s = ctx.spec(src)?;
    let mut d = match dest {
        Some(d) => dest_spec(ctx, &s, d)?,
        None => s.clone(),
    };
    if let Some(p) = dest_pool {
        d.pool = p.to_string();
    }
    let mut opts = create_opts(ctx, c, "preparing migration failed")?;
    if c.image_feature.is_empty() && !c.image_shared {
        // The source's features, unless asked otherwise (as librbd).
        opts.features = None;
    }
    let sio = ctx.ioctx(&s.pool, &s.namespace).await?;
    let dio = ctx.ioctx(&d.pool, &d.namespace).await?;
    ctx.rbd
        .migration_prepare(&sio, &s.image, &dio, &d.image, &opts)
        .await
        .map_err(|e| failed("preparing migration failed", &e))
}

/// `rbd migration execute IMAGE`.
pub async fn execute(ctx: &Ctx, image: &str) -> CmdResult {
    let s = ctx.spec(image)?;
    let io = ctx.ioctx(&s.pool, &s.namespace).await?;
    let p = Progress::new(ctx.g.progress(), "Image migration", 1);
    let r = ctx
        .rbd
        .migration_execute(&io, &s.image, |done, total| {
            p.set_length(total);
            p.set(done);
        })
        .await;
    p.finish(r.map_err(|e| failed("executing migration failed", &e)))
}

/// `rbd migration commit IMAGE`.
pub async fn commit(ctx: &Ctx, image: &str) -> CmdResult {
    let s = ctx.spec(image)?;
    let io = ctx.ioctx(&s.pool, &s.namespace).await?;
    let p = Progress::new(ctx.g.progress(), "Commit image migration", 1);
    let r = ctx.rbd.migration_commit(&io, &s.image).await;
    p.finish(r.map_err(|e| failed("committing migration failed", &e)))
}

/// `rbd migration abort IMAGE`.
pub async fn abort(ctx: &Ctx, image: &str) -> CmdResult {
    let s = ctx.spec(image)?;
    let io = ctx.ioctx(&s.pool, &s.namespace).await?;
    let p = Progress::new(ctx.g.progress(), "Abort image migration", 1);
    let r = ctx.rbd.migration_abort(&io, &s.image).await;
    p.finish(r.map_err(|e| failed("aborting migration failed", &e)))
}

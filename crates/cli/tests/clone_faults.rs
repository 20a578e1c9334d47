//! Clones through OSD failures on one host (issue 3's "clone read zeros"
//! observation): quarry-fsx (images, snapshots, clones, copy-up, flatten,
//! rollback, every read checked against a model) runs on a 3-OSD cluster
//! while, one at a time, an OSD is frozen with SIGSTOP until the monitor
//! marks it down and then resumed (it returns with a stale map and its
//! sockets intact, as a host whose link was cut), killed with -9 and
//! restarted, or marked down while alive (`osd down`). At the end every
//! image and snapshot is read through cached handles and through freshly
//! opened ones (stored headers and object maps), then through each OSD
//! alone, so a replica missing a clone, a SnapSet or an object map update
//! is caught.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use quarry_client::ClusterClient;
use quarry_fsx::{Fsx, FsxConfig, Prng};
use quarry_monc::MonCommand;
use quarry_rados::Rados;

/// Bound on fsx reaching the next step while a fault is injected.
const STAGE: Duration = Duration::from_secs(120);

async fn wait_map(c: &ClusterClient, what: &str, f: impl Fn(&quarry_map::ClusterMap) -> bool) {
    bounded(what, async {
        loop {
            if let Ok(m) = c.monc().refresh_map().await {
                if f(&m) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn signal(cl: &Cluster, name: &str, sig: i32) {
    // SAFETY: signal to a daemon this test started.
    unsafe { libc::kill(cl.pid(name), sig) };
}

/// `osd.N`'s `up_from` in the newest map.
async fn up_from(c: &ClusterClient, osd: u32) -> u64 {
    let m = bounded("map", c.monc().refresh_map()).await.expect("map");
    m.osds[&osd].up_from
}

type FsxTask = tokio::task::JoinHandle<Result<Fsx, quarry_fsx::FsxFailure>>;

/// Wait until fsx (running in `task`) has done `n` ops; fail with its
/// report if it failed, or if it stalls.
async fn reach(done: &AtomicU64, task: &mut FsxTask, n: u64, what: &str) {
    let t = Instant::now();
    while done.load(Ordering::SeqCst) < n {
        if task.is_finished() {
            match (&mut *task).await {
                Ok(Err(f)) => panic!("fsx failed before op {n} ({what}): {f}"),
                Ok(Ok(_)) => panic!("fsx ended before op {n} ({what})"),
                Err(e) => panic!("fsx task: {e}"),
            }
        }
        assert!(
            t.elapsed() < STAGE,
            "fsx did not reach op {n} within {STAGE:?} ({what})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsx_clones_through_osd_stops_kills_and_mark_downs() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    // One round is one fault of each kind. QUARRY_CLONE_FAULT_ROUNDS: more
    // rounds (stress loops; with 5 rounds about one run in eight still
    // fails on bugs outside this test's subject, see ARCHITECTURE's Known
    // gaps, so CI runs one).
    let rounds: u64 = std::env::var("QUARRY_CLONE_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed = fsx_seeds(&[5])[0];
    let pool = format!("cz{seed}");
    pool_create(&c, &pool, 2).await;
    wait_clean(&c).await;
    let rados: Arc<dyn Rados> = c.clone();
    let cfg = FsxConfig {
        seed,
        ops: 0,
        max_size: 2 << 20,
        ..FsxConfig::default()
    };
    let mut fsx = fsx_ok(Fsx::new(cfg, rados, &pool).await);
    // Images, snapshots and clones first: the faults must find clones
    // reading through their parents.
    let clones = |f: &Fsx| f.report().counts.get("clone").copied().unwrap_or(0);
    bounded("first fsx ops", async {
        while clones(&fsx) < 2 && fsx.ops_done() < 1000 {
            fsx_ok(fsx.ops(10).await);
        }
    })
    .await;
    assert!(
        clones(&fsx) >= 1,
        "no clones after {} ops: {:?}",
        fsx.ops_done(),
        fsx.report().counts
    );
    let done = Arc::new(AtomicU64::new(fsx.ops_done()));
    let stop = Arc::new(AtomicBool::new(false));
    let (d2, s2) = (done.clone(), stop.clone());
    let mut task: FsxTask = tokio::spawn(async move {
        while !s2.load(Ordering::SeqCst) {
            fsx.ops(1).await?;
            d2.store(fsx.ops_done(), Ordering::SeqCst);
        }
        Ok::<_, quarry_fsx::FsxFailure>(fsx)
    });
    let mut rng = Prng::new(seed ^ 0xc10e_2e05);
    let t0 = Instant::now();
    for round in 0..rounds * 3 {
        let victim = rng.below(3) as u32;
        let name = format!("osd.{victim}");
        let before = up_from(&c, victim).await;
        let at = done.load(Ordering::SeqCst);
        reach(&done, &mut task, at + 10, "before a fault").await;
        let at = done.load(Ordering::SeqCst);
        match round % 3 {
            0 => {
                eprintln!("round {round}: SIGSTOP {name} at op {at}");
                signal(&cl, &name, libc::SIGSTOP);
                wait_map(&c, "stopped osd marked down", |m| !m.osds[&victim].up).await;
                let at = done.load(Ordering::SeqCst);
                reach(&done, &mut task, at + 15, "while an osd is stopped").await;
                eprintln!("round {round}: SIGCONT {name}");
                signal(&cl, &name, libc::SIGCONT);
            }
            1 => {
                eprintln!("round {round}: kill -9 {name} at op {at}");
                cl.kill9(&name);
                wait_map(&c, "killed osd marked down", |m| !m.osds[&victim].up).await;
                let at = done.load(Ordering::SeqCst);
                reach(&done, &mut task, at + 15, "while an osd is dead").await;
                eprintln!("round {round}: restart {name}");
                cl.start_osd(victim);
            }
            _ => {
                eprintln!("round {round}: osd down {victim} (alive) at op {at}");
                bounded(
                    "osd down",
                    c.monc().command(MonCommand::OsdDown { id: victim }),
                )
                .await
                .expect("osd down");
            }
        }
        wait_map(&c, "osd up again", |m| {
            m.osds[&victim].up && m.osds[&victim].up_from > before
        })
        .await;
        let at = done.load(Ordering::SeqCst);
        reach(&done, &mut task, at + 10, "after the osd returned").await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut fsx = fsx_ok(bounded("fsx to stop", task).await.expect("join"));
    eprintln!(
        "{} ops through {} faults in {:.1} s: {:?}",
        fsx.ops_done(),
        rounds * 3,
        t0.elapsed().as_secs_f64(),
        fsx.report().counts
    );
    for op in ["clone", "snap_create", "write"] {
        assert!(
            fsx.report().counts.get(op).copied().unwrap_or(0) > 0,
            "the run never exercised {op}: {:?}",
            fsx.report().counts
        );
    }
    wait_clean(&c).await;
    fsx_ok(bounded("verify", fsx.verify()).await);
    fsx_ok(bounded("cold verify", fsx.verify_cold()).await);

    // Each OSD alone serves every image and snapshot as the model has them:
    // recovery brought clones, SnapSets and object maps to every replica.
    bounded(
        "min_size 1",
        c.monc().command(MonCommand::PoolSet {
            name: pool.clone(),
            var: "min_size".into(),
            val: "1".into(),
        }),
    )
    .await
    .expect("pool set");
    for keep in 0..3u32 {
        let others: Vec<u32> = (0..3).filter(|&o| o != keep).collect();
        for &o in &others {
            cl.kill9(&format!("osd.{o}"));
        }
        wait_map(&c, "the other osds down", |m| {
            others.iter().all(|o| !m.osds[o].up)
        })
        .await;
        fsx_ok(bounded("cold verify on one osd", fsx.verify_cold()).await);
        eprintln!("osd.{keep} alone serves every image and snapshot as the model has them");
        for &o in &others {
            cl.start_osd(o);
        }
        wait_map(&c, "every osd up", |m| (0..3).all(|o| m.osds[&o].up)).await;
        wait_clean(&c).await;
    }
}

/// Names (from `prefix0`, `prefix1`, ...) of `n` objects of `pool` whose
/// PG has `osd` as primary in `map`.
fn names_with_primary(
    map: &quarry_map::ClusterMap,
    pool: i64,
    osd: u32,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|name| {
            let pg = map.object_pg(pool, "", name).expect("pg");
            map.pg_primary(pg).expect("primary") == Some(osd)
        })
        .take(n)
        .collect()
}

async fn read_obj(c: &ClusterClient, pool: i64, name: &str) -> Option<Vec<u8>> {
    use quarry_rados::{ObjectId, Op, OpOutput, OpRequest};
    let req = OpRequest::new(ObjectId::new(pool, name)).op(Op::Read { off: 0, len: 0 });
    match bounded(&format!("read {name}"), c.operate(req)).await {
        Ok(r) => match &r.outputs[0] {
            OpOutput::Data(d) => Some(d.to_vec()),
            o => panic!("unexpected output {o:?}"),
        },
        Err(e) if e.errno == quarry_common::Errno::ENOENT => None,
        Err(e) => panic!("read {name}: {e}"),
    }
}

async fn write_obj(c: &ClusterClient, pool: i64, name: &str, data: &[u8]) {
    use quarry_rados::{ObjectId, Op, OpRequest};
    let req = OpRequest::new(ObjectId::new(pool, name))
        .op(Op::WriteFull(bytes::Bytes::copy_from_slice(data)));
    bounded(&format!("write {name}"), c.operate(req))
        .await
        .expect("write");
}

/// A primary back from a freeze (or a cut link) learns the map that marked
/// it down and boots again before its map loop has re-peered its PGs.
/// Clients already send it ops at the newer map; it must not serve them
/// from the interval it had before the gap: its store missed the writes
/// acknowledged meanwhile, so an object created then would read as absent
/// (a clone reading its parent's data there gets zeros) and an overwritten
/// one as its old bytes. The map loop is slowed by fault injection so that
/// the window is seconds wide instead of a rare race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_primary_serves_no_reads_from_its_old_interval() {
    let cl = Cluster::up(3, 1);
    let c = cl.client().await;
    let pool = pool_create(&c, "stale", 2).await;
    wait_clean(&c).await;
    cl.kill9("osd.0");
    wait_map(&c, "osd.0 down", |m| !m.osds[&0].up).await;
    cl.start_osd_env(0, &[], &[("QUARRY_OSD_INJECT_MAP_DELAY_MS", "6000")]);
    wait_map(&c, "osd.0 up", |m| m.osds[&0].up).await;
    wait_clean(&c).await;
    let map = bounded("map", c.monc().refresh_map()).await.expect("map");
    let names = names_with_primary(&map, pool, 0, "obj", 2);
    let (x, y) = (&names[0], &names[1]);
    write_obj(&c, pool, x, b"x-old").await;

    let before = map.osds[&0].up_from;
    signal(&cl, "osd.0", libc::SIGSTOP);
    wait_map(&c, "frozen osd.0 marked down", |m| !m.osds[&0].up).await;
    write_obj(&c, pool, x, b"x-new").await;
    write_obj(&c, pool, y, b"y-new").await;
    signal(&cl, "osd.0", libc::SIGCONT);
    wait_map(&c, "osd.0 booted again", |m| {
        m.osds[&0].up && m.osds[&0].up_from > before
    })
    .await;
    let map = bounded("map", c.monc().refresh_map()).await.expect("map");
    for name in [x, y] {
        let pg = map.object_pg(pool, "", name).expect("pg");
        assert_eq!(
            map.pg_primary(pg).expect("primary"),
            Some(0),
            "{name}'s primary must be osd.0 again"
        );
    }
    assert_eq!(
        read_obj(&c, pool, y).await.as_deref(),
        Some(&b"y-new"[..]),
        "object created while osd.0 was frozen, read through osd.0 back as primary"
    );
    assert_eq!(
        read_obj(&c, pool, x).await.as_deref(),
        Some(&b"x-new"[..]),
        "object rewritten while osd.0 was frozen, read through osd.0 back as primary"
    );
}

use super::*;

fn map_with(hosts: &[(&str, u32)], size: u32, domain: FailureDomain) -> ClusterMap {
    let mut m = ClusterMap::new("test");
    let mut id = 0;
    for &(h, n) in hosts {
        for _ in 0..n {
            m.osds.insert(
                id,
                OsdInfo {
                    id,
                    addr: format!("127.0.0.1:{}", 6800 + id),
                    host: h.to_string(),
                    up: true,
                    in_cluster: true,
                    weight: WEIGHT_ONE,
                    up_from: 1,
                    down_at: 0,
                },
            );
            id += 1;
        }
    }
    m.pools.insert(
        1,
        PoolDef {
            id: 1,
            name: "rbd".into(),
            size,
            min_size: 2,
            pg_num: 128,
            failure_domain: domain,
            snap_seq: 0,
            removed_snaps: vec![],
            application: Some("rbd".into()),
        },
    );
    m
}

#[test]
fn sets_are_distinct_full_and_deterministic() {
    let m = map_with(&[("a", 2), ("b", 2), ("c", 2)], 3, FailureDomain::Host);
    for pg in m.pool_pgs(1).expect("pool") {
        let s = m.pg_up_set(pg).expect("set");
        assert_eq!(s.len(), 3);
        let hosts: std::collections::BTreeSet<_> =
            s.iter().map(|i| m.osds[i].host.clone()).collect();
        assert_eq!(hosts.len(), 3, "pg {pg} replicas share a host: {s:?}");
        assert_eq!(s, m.clone().pg_up_set(pg).expect("set"));
    }
}

#[test]
fn one_host_needs_osd_domain() {
    let m = map_with(&[("only", 3)], 3, FailureDomain::Osd);
    assert!(m.single_host());
    for pg in m.pool_pgs(1).expect("pool") {
        let mut s = m.pg_up_set(pg).expect("set");
        s.sort();
        assert_eq!(s, vec![0, 1, 2]);
    }
    let h = map_with(&[("only", 3)], 3, FailureDomain::Host);
    assert_eq!(
        h.pg_up_set(PgId { pool: 1, seed: 0 }).expect("set").len(),
        1
    );
}

#[test]
fn primaries_spread_evenly() {
    let m = map_with(&[("h", 3)], 3, FailureDomain::Osd);
    let mut count = [0u32; 3];
    for pg in m.pool_pgs(1).expect("pool") {
        count[m.pg_primary(pg).expect("pool").expect("primary") as usize] += 1;
    }
    for c in count {
        assert!((20..=70).contains(&c), "uneven primaries {count:?}");
    }
}

#[test]
fn down_osd_leaves_up_set_but_stays_mapped_until_out() {
    let mut m = map_with(&[("h", 4)], 3, FailureDomain::Osd);
    let pgs = m.pool_pgs(1).expect("pool");
    let before: Vec<_> = pgs
        .iter()
        .map(|&pg| m.pg_raw_set(pg).expect("set"))
        .collect();
    m.osds.get_mut(&1).expect("osd").up = false;
    for (pg, raw) in pgs.iter().zip(&before) {
        assert_eq!(&m.pg_raw_set(*pg).expect("set"), raw);
        let up = m.pg_up_set(*pg).expect("set");
        assert!(!up.contains(&1));
        assert_eq!(up.len(), raw.len() - raw.contains(&1) as usize);
    }
    // Marking it out remaps only the PGs that used it (straw2 stability).
    m.osds.get_mut(&1).expect("osd").in_cluster = false;
    for (pg, raw) in pgs.iter().zip(&before) {
        let now = m.pg_raw_set(*pg).expect("set");
        assert_eq!(now.len(), 3);
        if !raw.contains(&1) {
            assert_eq!(&now, raw, "pg {pg} moved although osd.1 was not in it");
        }
    }
}

#[test]
fn weights_share_primaries_and_a_reweight_moves_only_its_own() {
    let mut m = map_with(&[("h", 4)], 1, FailureDomain::Osd);
    m.pools.get_mut(&1).expect("pool").pg_num = 1024;
    let pgs = m.pool_pgs(1).expect("pool");
    let count = |m: &ClusterMap| {
        let mut c = [0u32; 4];
        for &pg in &pgs {
            c[m.pg_primary(pg).expect("pool").expect("primary") as usize] += 1;
        }
        c
    };
    let before: Vec<_> = pgs
        .iter()
        .map(|&pg| m.pg_primary(pg).expect("pool"))
        .collect();
    // osd.3 at 3.0 beside three at 1.0: about half of the PGs.
    m.osds.get_mut(&3).expect("osd").weight = 3 * WEIGHT_ONE;
    let c = count(&m);
    assert!((430..=600).contains(&c[3]), "weight 3 of 6 got {c:?}");
    for (pg, was) in pgs.iter().zip(&before) {
        let now = m.pg_primary(*pg).expect("pool");
        // Raising osd.3's weight only moves PGs to it.
        assert!(
            now == *was || now == Some(3),
            "pg {pg} moved {was:?} -> {now:?}"
        );
    }
    // Weight 0 drains it: every PG elsewhere, and a host of zero-weight
    // OSDs is no candidate.
    m.osds.get_mut(&3).expect("osd").weight = 0;
    assert_eq!(count(&m)[3], 0);
    for osd in 0..3 {
        m.osds.get_mut(&osd).expect("osd").weight = 0;
    }
    assert_eq!(m.pg_primary(pgs[0]).expect("pool"), None);
}

#[test]
fn object_pg_is_stable_and_namespaced() {
    let m = map_with(&[("h", 3)], 3, FailureDomain::Osd);
    let a = m
        .object_pg(1, "", "rbd_data.abc.0000000000000000")
        .expect("pg");
    assert_eq!(
        a,
        m.object_pg(1, "", "rbd_data.abc.0000000000000000")
            .expect("pg")
    );
    assert!(a.seed < 128);
    assert_eq!(m.object_pg(9, "", "x"), Err(MapError::NoSuchPool(9)));
    let differ = (0..64)
        .filter(|i| {
            let n = format!("obj{i}");
            m.object_pg(1, "", &n).expect("pg") != m.object_pg(1, "ns", &n).expect("pg")
        })
        .count();
    assert!(differ > 32);
}

#[test]
fn stable_mod_matches_ceph_definition() {
    assert_eq!(stable_mod(5, 1), 0);
    for x in 0..1000u32 {
        assert!(stable_mod(x, 12) < 12);
    }
    assert_eq!(stable_mod(13, 12), 13 & 7);
    assert_eq!(stable_mod(11, 12), 11);
}

proptest::proptest! {
    #[test]
    fn placement_never_duplicates(seed in 0u32..10_000, n in 1u32..8, size in 1u32..5) {
        let m = map_with(&[("h", n)], size, FailureDomain::Osd);
        let s = m.pg_up_set(PgId { pool: 1, seed }).expect("set");
        let uniq: std::collections::BTreeSet<_> = s.iter().collect();
        proptest::prop_assert_eq!(uniq.len(), s.len());
        proptest::prop_assert_eq!(s.len() as u32, size.min(n));
    }
}

#[test]
fn client_addr_parse_and_blocklist() {
    use std::net::IpAddr;
    let a = ClientAddr::parse("127.0.0.1:0/4123").expect("parse");
    assert_eq!(a.to_string(), "127.0.0.1:0/4123");
    assert_eq!(
        ClientAddr::parse("10.0.0.1").expect("ip").to_string(),
        "10.0.0.1:0/0"
    );
    assert_eq!(
        ClientAddr::parse("any:10.0.0.1:6800/9")
            .expect("prefix")
            .to_string(),
        "10.0.0.1:6800/9"
    );
    assert_eq!(
        ClientAddr::parse("[::1]:0/5").expect("v6").to_string(),
        "[::1]:0/5"
    );
    for bad in ["", "x", "1.2.3.4/abc", "1.2.3.4:99999/1", "1.2.3/1"] {
        assert!(ClientAddr::parse(bad).is_err(), "{bad}");
    }
    let mut m = ClusterMap::new("f");
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    assert!(!m.is_blocklisted(ip, 4123, 100));
    m.blocklist.insert(a.to_string(), 200);
    assert!(m.is_blocklisted(ip, 4123, 100));
    assert!(!m.is_blocklisted(ip, 4124, 100), "another instance");
    assert!(!m.is_blocklisted(ip, 4123, 200), "expired");
    m.blocklist.insert("10.0.0.1:0/0".into(), 200);
    assert!(
        m.is_blocklisted("10.0.0.1".parse().expect("ip"), 77, 100),
        "whole ip"
    );
}

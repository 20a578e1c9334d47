use super::*;
use crate::conf::{ConfFile, MetaVars};
use crate::entity::EntityName;
use std::time::Duration;

fn def(name: &str) -> &'static OptionDef {
    find_option(name).unwrap_or_else(|| panic!("no option {name}"))
}

fn canon(name: &str, v: &str) -> Result<String, String> {
    canonicalize(def(name), v)
}

fn test_config() -> Config {
    let mut c = Config::new(EntityName::admin());
    c.set_metavars(MetaVars {
        cluster: "ceph".into(),
        entity: EntityName::admin(),
        host: "node1".into(),
        pid: 42,
        home: Some("/home/u".into()),
    });
    c
}

#[test]
fn tables_are_sorted_and_unique() {
    for w in QUARRY_OPTIONS.windows(2) {
        assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
    }
    for w in ceph_table::CEPH_OPTIONS.windows(2) {
        assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
    }
    let all = all_options();
    for w in all.windows(2) {
        assert!(w[0].name < w[1].name);
    }
    assert!(all.len() >= ceph_table::CEPH_OPTIONS.len());
}

#[test]
fn every_default_is_valid_for_its_type() {
    for d in all_options() {
        let c = canonicalize(d, d.default);
        assert!(
            c.is_ok(),
            "default of {} ({:?}) = {:?}: {:?}",
            d.name,
            d.ty,
            d.default,
            c
        );
    }
    // Quarry's own defaults are already canonical.
    for d in QUARRY_OPTIONS {
        assert_eq!(canonicalize(d, d.default).unwrap(), d.default, "{}", d.name);
        assert!(!d.description.is_empty() && d.used);
    }
}

#[test]
fn quarry_table_agrees_with_ceph_on_types() {
    for d in QUARRY_OPTIONS {
        let Ok(i) = ceph_table::CEPH_OPTIONS.binary_search_by(|o| o.name.cmp(d.name)) else {
            assert!(
                matches!(d.name, "mon_addr" | "quarry_embedded_dir"),
                "only mon_addr and quarry_embedded_dir are Quarry-only, not {}",
                d.name
            );
            continue;
        };
        let c = &ceph_table::CEPH_OPTIONS[i];
        if d.name == "rbd_default_features" {
            assert_eq!(c.ty, OptType::Str);
            continue;
        }
        if d.ty == OptType::ConMode {
            // Ceph's are plain strings; Quarry checks the list.
            assert_eq!(c.ty, OptType::Str, "{}", d.name);
            assert_eq!(d.default, c.default, "{}", d.name);
            continue;
        }
        assert_eq!(d.ty, c.ty, "{}", d.name);
        assert_eq!(d.enum_values, c.enum_values, "{}", d.name);
        // Deliberate differences, each explained in the table.
        if !matches!(
            d.name,
            "keyring" | "mon_client_ping_interval" | "mon_client_ping_timeout"
        ) {
            assert_eq!(d.default, c.default, "{}", d.name);
        }
    }
}

#[test]
fn names_are_normalized() {
    assert_eq!(def("rbd cache").name, "rbd_cache");
    assert_eq!(def("rbd-cache").name, "rbd_cache");
    assert_eq!(def(" mon host ").name, "mon_host");
    assert!(def("rbd_cache").used);
    // A Ceph-only option is known but marked unused.
    let d = def("rbd_journal_order");
    assert!(!d.used && d.description.contains("compatibility"));
    assert!(find_option("no_such_option").is_none());
    assert!(find_option("").is_none());
    assert_eq!(def("debug_rbd").ty, OptType::DebugLevel);
    assert_eq!(def("debug-ms").ty, OptType::DebugLevel);
    assert!(find_option("debug_").is_none());
    assert!(find_option("debug_RBD").is_none());
    // Real options starting with debug_ keep their own type.
    assert_eq!(def("debug_asserts_on_shutdown").ty, OptType::Bool);
}

#[test]
fn bools_follow_ceph() {
    for t in ["true", "TRUE", "True", "1", "2", "-1", "+1"] {
        assert_eq!(canon("rbd_cache", t).as_deref(), Ok("true"), "{t}");
    }
    for f in ["false", "FALSE", "0", "-0", "00"] {
        assert_eq!(canon("rbd_cache", f).as_deref(), Ok("false"), "{f}");
    }
    for bad in [
        "yes", "no", "on", "off", "maybe", "", " true", "1 ", "++1", "0x1",
    ] {
        assert!(canon("rbd_cache", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn sizes_follow_ceph() {
    let s = |v| canon("rbd_cache_size", v);
    assert_eq!(s("4096").as_deref(), Ok("4096"));
    assert_eq!(s("4K").as_deref(), Ok("4096"));
    assert_eq!(s("4Ki").as_deref(), Ok("4096"));
    assert_eq!(s("32M").as_deref(), Ok("33554432"));
    assert_eq!(s("1G").as_deref(), Ok("1073741824"));
    assert_eq!(s("1Ti").as_deref(), Ok("1099511627776"));
    assert_eq!(s("5B").as_deref(), Ok("5"));
    assert_eq!(s("15E").as_deref(), Ok((15u64 << 60).to_string().as_str()));
    // Canonical values above i64::MAX parse again (found by proptest).
    assert_eq!(s("8200P").as_deref(), Ok("9232379236109516800"));
    assert_eq!(
        s("9232379236109516800").as_deref(),
        Ok("9232379236109516800")
    );
    assert_eq!(
        s("18446744073709551615").as_deref(),
        Ok("18446744073709551615")
    );
    assert!(s("18446744073709551616").is_err());
    assert!(s("+").is_err());
    assert!(s("1-2").is_err());
    for bad in [
        "32MiB",
        "32m",
        "-1",
        "-1K",
        "",
        "K",
        "1.5M",
        "16E",
        "4X",
        "4Bi",
        "4KB",
        "99999999999999999999",
    ] {
        assert!(s(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn ints_use_si_suffixes() {
    assert_eq!(canon("ms_bind_port_min", "6800").as_deref(), Ok("6800"));
    assert_eq!(canon("ms_bind_port_min", "-5").as_deref(), Ok("-5"));
    assert_eq!(canon("ms_bind_port_min", "2K").as_deref(), Ok("2000"));
    assert_eq!(canon("rbd_op_threads", "3").as_deref(), Ok("3"));
    assert_eq!(canon("rbd_op_threads", "1M").as_deref(), Ok("1000000"));
    assert!(canon("rbd_op_threads", "-1").is_err());
    assert!(canon("rbd_op_threads", "abc").is_err());
    assert!(canon("rbd_op_threads", "1.0").is_err());
    assert!(canon("rbd_op_threads", "1Ki").is_err());
    assert!(canon("ms_bind_port_min", "10E").is_err());
    assert!(canon("ms_bind_port_min", "9223372036854775808").is_err());
}

#[test]
fn bounds_are_enforced() {
    assert!(canon("osd_heartbeat_interval", "0").is_err());
    assert!(canon("osd_heartbeat_interval", "61").is_err());
    assert_eq!(canon("osd_heartbeat_interval", "60").as_deref(), Ok("60"));
    assert!(canon("rbd_concurrent_management_ops", "0").is_err());
    assert!(canon("osd_pool_default_size", "11").is_err());
    let e = canon("osd_pool_default_size", "11").unwrap_err();
    assert!(e.contains("at most 10"), "{e}");
}

#[test]
fn floats_secs_and_other_types() {
    assert_eq!(
        canon("rbd_cache_max_dirty_age", "2.5").as_deref(),
        Ok("2.5")
    );
    assert_eq!(canon("rbd_cache_max_dirty_age", "1.0").as_deref(), Ok("1"));
    for bad in ["abc", "inf", "NaN", ""] {
        assert!(canon("rbd_cache_max_dirty_age", bad).is_err(), "{bad}");
    }
    let s = |v| canon("client_mount_timeout", v);
    assert_eq!(s("5").as_deref(), Ok("5"));
    assert_eq!(s("5s").as_deref(), Ok("5"));
    assert_eq!(s("1m").as_deref(), Ok("60"));
    assert_eq!(s("1h 30m").as_deref(), Ok("5400"));
    assert_eq!(s("2 days").as_deref(), Ok("172800"));
    for bad in ["", "-5", "5x", "m", "1.5h", "99999999999999999999y"] {
        assert!(s(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        canon("fsid", "E151731D-F93C-486D-A5E3-F6FA213FCDB6").as_deref(),
        Ok("e151731d-f93c-486d-a5e3-f6fa213fcdb6")
    );
    for bad in [
        "",
        "x",
        "e151731d-f93c-486d-a5e3-f6fa213fcdbZ",
        "e151731df93c486da5e3f6fa213fcdb6",
    ] {
        assert!(canon("fsid", bad).is_err(), "{bad:?}");
    }
    assert!(canon("public_addr", "1.2.3.4:6789").is_ok());
    assert!(canon("public_addr", "1.2.3.4 6789").is_err());
    assert_eq!(
        canon("cephsqlite_lock_renewal_interval", "2000").as_deref(),
        Ok("2000")
    );
    assert!(canon("cephsqlite_lock_renewal_interval", "2s").is_err());
}

#[test]
fn enums_are_case_sensitive() {
    assert_eq!(
        canon("rbd_cache_policy", "writeback").as_deref(),
        Ok("writeback")
    );
    assert!(canon("rbd_cache_policy", "WriteBack").is_err());
    assert!(canon("rbd_cache_policy", "bogus")
        .unwrap_err()
        .contains("writethrough"));
    assert!(canon("rbd_read_from_replica_policy", "balance").is_ok());
}

#[test]
fn features_by_number_or_name() {
    let f = |v| canon("rbd_default_features", v);
    assert_eq!(f("61").as_deref(), Ok("61"));
    assert_eq!(f("layering,exclusive-lock").as_deref(), Ok("5"));
    assert_eq!(
        f("layering, exclusive-lock, object-map, fast-diff, deep-flatten").as_deref(),
        Ok("61")
    );
    assert_eq!(f("").as_deref(), Ok("0"));
    assert!(f("layering,bogus").unwrap_err().contains("bogus"));
    assert!(f("4096").is_err());
    assert_eq!(parse_features("layering").unwrap(), 1);
}

#[test]
fn debug_levels() {
    assert_eq!(canon("debug_rbd", "20").as_deref(), Ok("20/20"));
    assert_eq!(canon("debug_rbd", "1/5").as_deref(), Ok("1/5"));
    for bad in ["", "100", "-1", "a", "1/", "/1", "1/2/3"] {
        assert!(canon("debug_rbd", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn connection_modes() {
    for name in ["ms_client_mode", "ms_cluster_mode", "ms_service_mode"] {
        assert_eq!(def(name).default, "crc secure");
        assert_eq!(def(name).ty.as_str(), "str");
    }
    for name in [
        "ms_mon_client_mode",
        "ms_mon_cluster_mode",
        "ms_mon_service_mode",
    ] {
        assert_eq!(def(name).default, "secure crc");
    }
    assert_eq!(canon("ms_client_mode", "crc").as_deref(), Ok("crc"));
    assert_eq!(
        canon("ms_client_mode", " SECURE, crc;crc ").as_deref(),
        Ok("secure crc")
    );
    // `secure` alone is a valid value (so that a client or daemon given it
    // can refuse to run), but not one this build can honour.
    assert_eq!(canon("ms_cluster_mode", "secure").as_deref(), Ok("secure"));
    assert!(con_modes_supported("secure crc").is_ok());
    assert!(con_modes_supported("crc").is_ok());
    let e = con_modes_supported("secure").unwrap_err();
    assert!(
        e.contains("cannot encrypt") && e.contains("crc secure"),
        "{e}"
    );
    for bad in ["", " , ", "crc tls", "crc+secure", "legacy"] {
        assert!(canon("ms_client_mode", bad).is_err(), "{bad:?}");
        assert!(con_modes_supported(bad).is_err(), "{bad:?}");
    }
    let mut c = test_config();
    let e = c
        .set("ms_client_mode", "crc, nope", Level::Override)
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(
        e.to_string().contains("unknown connection mode \"nope\""),
        "{e}"
    );
    c.set("ms_client_mode", "secure", Level::Override).unwrap();
    assert_eq!(c.get_str("ms_client_mode").unwrap(), "secure");
    // The monitors' database refuses what no one could use.
    let e = mondb::check_set("ms_mon_client_mode", "secure").unwrap_err();
    assert!(e.to_string().contains("cannot encrypt"), "{e}");
    assert_eq!(
        mondb::check_set("ms-client-mode", "secure crc").unwrap(),
        ("ms_client_mode".to_string(), "secure crc".to_string())
    );
}

#[test]
fn unknown_and_bad_values_map_to_librados_errnos() {
    let mut c = test_config();
    let e = c.set("no_such_opt", "1", Level::Override).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOENT);
    assert_eq!(e.to_string(), "unknown option 'no_such_opt'");
    let e = c.set("rbd_cache", "maybe", Level::Override).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    assert!(
        e.to_string().contains("'maybe'") && e.to_string().contains("rbd_cache"),
        "{e}"
    );
    assert_eq!(
        c.set("name", "x", Level::Override).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert_eq!(
        c.set("rbd_cache", "true", Level::Default)
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    assert_eq!(
        c.unset("nope", Level::File).unwrap_err().errno(),
        Errno::ENOENT
    );
}

#[test]
fn precedence_is_by_level_not_call_order() {
    let mut c = test_config();
    assert_eq!(c.get("rbd_cache_size").as_deref(), Some("33554432"));
    assert_eq!(
        c.get_with_source("rbd_cache_size").unwrap().1,
        Level::Default
    );
    c.set("rbd_cache_size", "6", Level::Override).unwrap();
    c.set("rbd_cache_size", "7", Level::File).unwrap();
    assert_eq!(c.get("rbd_cache_size").as_deref(), Some("6"));
    c.set("rbd_cache_max_dirty", "8", Level::File).unwrap();
    c.set("rbd_cache_max_dirty", "4", Level::Env).unwrap();
    assert_eq!(c.get("rbd_cache_max_dirty").as_deref(), Some("4"));
    c.set("rbd_cache_size", "4444", Level::File).unwrap();
    c.set("rbd_cache_size", "2222", Level::Mon).unwrap();
    c.unset("rbd_cache_size", Level::Override).unwrap();
    assert_eq!(
        c.get_with_source("rbd_cache_size").unwrap(),
        ("4444".to_string(), Level::File)
    );
    // Image metadata beats QEMU's own rados_conf_set("rbd_cache").
    c.set("rbd_cache", "true", Level::Override).unwrap();
    c.set("rbd_cache", "false", Level::Image).unwrap();
    c.set("rbd_cache", "true", Level::Pool).unwrap();
    assert!(!c.get_bool("rbd_cache").unwrap());
    assert_eq!(
        c.get_at("rbd_cache", Level::Pool).unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(c.get_at("rbd_cache", Level::Env).unwrap(), None);
    assert_eq!(
        c.get_at("rbd_cache", Level::Default).unwrap().as_deref(),
        Some("true")
    );
    c.clear_level(Level::Image);
    assert!(c.get_bool("rbd_cache").unwrap());
}

#[test]
fn runtime_rules_after_connect() {
    let mut c = test_config();
    c.set("mon_host", "1.2.3.4", Level::Override).unwrap();
    c.mark_started();
    assert!(c.set("rbd_cache", "false", Level::Override).is_ok());
    let e = c.set("mon_host", "5.6.7.8", Level::Override).unwrap_err();
    assert_eq!(e.errno(), Errno::EPERM);
    assert_eq!(c.get("mon_host").as_deref(), Some("1.2.3.4"));
}

#[test]
fn metavariables_expand_on_get() {
    let mut c = test_config();
    assert_eq!(
        c.get("keyring").unwrap(),
        "/etc/ceph/ceph.client.admin.keyring,/etc/ceph/ceph.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin"
    );
    c.set(
        "admin_socket",
        "$run_dir/$cluster-$name.$pid.asok",
        Level::Override,
    )
    .unwrap();
    assert_eq!(
        c.get("admin_socket").unwrap(),
        "/var/run/ceph/ceph-client.admin.42.asok"
    );
    c.set("run_dir", "/tmp/r", Level::File).unwrap();
    assert_eq!(
        c.get_str("admin_socket").unwrap(),
        "/tmp/r/ceph-client.admin.42.asok"
    );
    c.set(
        "log_file",
        "/tmp/$cluster-$name-$type-$id-$host.log",
        Level::File,
    )
    .unwrap();
    assert_eq!(
        c.get("log_file").unwrap(),
        "/tmp/ceph-client.admin-client-admin-node1.log"
    );
    assert_eq!(c.get("name").as_deref(), Some("client.admin"));
    assert_eq!(c.get("cluster").as_deref(), Some("ceph"));
    assert_eq!(c.get("no_such"), None);
    let osd = Config::with_cluster(EntityName::parse("osd.3").unwrap(), "prod");
    assert_eq!(osd.get("osd_data").unwrap(), "/var/lib/ceph/osd/prod-3");
    assert_eq!(osd.cluster(), "prod");
    assert_eq!(osd.entity().to_string(), "osd.3");
}

#[test]
fn typed_getters() {
    let mut c = test_config();
    assert!(c.get_bool("rbd_cache").unwrap());
    assert_eq!(c.get_u64("rbd_default_order").unwrap(), 22);
    assert_eq!(c.get_size("rbd_cache_size").unwrap(), 32 << 20);
    assert_eq!(c.get_u64("rbd_default_features").unwrap(), 61);
    assert_eq!(c.get_i64("ms_bind_port_min").unwrap(), 6800);
    assert_eq!(c.get_f64("rbd_cache_max_dirty_age").unwrap(), 1.0);
    assert_eq!(
        c.get_duration("client_mount_timeout").unwrap(),
        Duration::from_secs(300)
    );
    assert_eq!(
        c.get_duration("rbd_cache_max_dirty_age").unwrap(),
        Duration::from_secs(1)
    );
    assert_eq!(c.get_str("rbd_default_pool").unwrap(), "rbd");
    c.set("debug_rbd", "20", Level::Override).unwrap();
    assert_eq!(c.get_str("debug_rbd").unwrap(), "20/20");
    assert_eq!(c.get("debug_ms").as_deref(), Some("0/5"));
    let e = c.get_bool("rbd_cache_size").unwrap_err();
    assert!(matches!(e, ConfigError::WrongType { .. }), "{e:?}");
    assert!(e.to_string().contains("size"), "{e}");
    assert_eq!(c.get_u64("no_such").unwrap_err().errno(), Errno::ENOENT);
    assert!(c.get_size("rbd_cache").is_err());
    assert!(c.get_i64("rbd_cache").is_err());
    assert!(c.get_f64("keyring").is_err());
    assert!(c.get_duration("keyring").is_err());
    assert!(c.get_str("rbd_cache").is_err());
}

#[test]
fn show_lists_everything_with_sources() {
    let mut c = test_config();
    c.set("rbd_cache", "false", Level::Override).unwrap();
    c.set("debug_rbd", "5", Level::Env).unwrap();
    let all = c.show();
    assert!(all.len() > 1700);
    let row = all.iter().find(|r| r.name == "rbd_cache").unwrap();
    assert_eq!((row.value.as_str(), row.source), ("false", Level::Override));
    let row = all.iter().find(|r| r.name == "debug_rbd").unwrap();
    assert_eq!((row.value.as_str(), row.source), ("5/5", Level::Env));
    let row = all.iter().find(|r| r.name == "keyring").unwrap();
    assert_eq!(row.source, Level::Default);
    assert!(row.value.starts_with("/etc/ceph/ceph.client.admin.keyring"));
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let diff = c.diff();
    assert_eq!(diff.len(), 2);
    assert_eq!(Level::Override.as_str(), "override");
}

#[test]
fn conf_file_applies_with_section_precedence() {
    let conf = ConfFile::parse(
        "[global]\n rbd cache size = 111\n rbd_cache_max_dirty = 0\n mon host = 127.0.0.1:1\n \
         no_such_key = 1\n[client]\n rbd_cache_max_dirty = 5\n rbd-cache-target-dirty = 7\n \
         rbd_cache = maybe\n[client.admin]\n rbd_cache_target_dirty = 9\n[client.foo]\n \
         rbd_cache_target_dirty = 11\n[osd]\n osd_data = /x\n",
    )
    .unwrap();
    let mut c = test_config();
    c.set("rbd_cache_size", "222", Level::Override).unwrap();
    let warnings = c.apply_conf_file(&conf);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].line, 9);
    assert_eq!(warnings[0].key, "rbd_cache");
    assert!(
        warnings[0].to_string().contains("line 9 [client]"),
        "{}",
        warnings[0]
    );
    assert_eq!(c.get("rbd_cache_size").as_deref(), Some("222"));
    assert_eq!(c.get("rbd_cache_max_dirty").as_deref(), Some("5"));
    assert_eq!(c.get("rbd_cache_target_dirty").as_deref(), Some("9"));
    assert_eq!(c.get("mon_host").as_deref(), Some("127.0.0.1:1"));
    assert_eq!(c.get_with_source("osd_data").unwrap().1, Level::Default);
    assert!(c.get_bool("rbd_cache").unwrap());

    let mut foo = Config::new(EntityName::client("foo").unwrap());
    foo.apply_conf_file(&conf);
    assert_eq!(foo.get("rbd_cache_target_dirty").as_deref(), Some("11"));

    // A second file replaces the first's values.
    let second = ConfFile::parse("[global]\nrbd_cache_max_dirty = 1\n").unwrap();
    c.apply_conf_file(&second);
    assert_eq!(c.get("rbd_cache_max_dirty").as_deref(), Some("1"));
    assert_eq!(c.get_with_source("mon_host").unwrap().1, Level::Default);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quarry-opt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn read_conf_file_searches_and_derives_cluster() {
    let d = tempdir("read");
    let prod = d.join("prod.conf");
    std::fs::write(&prod, "[global]\nmon_host = 9.9.9.9\n").unwrap();

    let mut c = test_config();
    let list = format!("{},{}", d.join("missing.conf").display(), prod.display());
    let (path, warnings) = c.read_conf_file(Some(&list), None, None).unwrap();
    assert_eq!(path, prod);
    assert!(warnings.is_empty());
    assert_eq!(c.cluster(), "prod");
    assert_eq!(c.get("mon_host").as_deref(), Some("9.9.9.9"));
    assert!(c
        .get("keyring")
        .unwrap()
        .starts_with("/etc/ceph/prod.client.admin.keyring,"));

    // Metavariables in explicit paths.
    let mut c2 = Config::with_cluster(EntityName::admin(), "prod");
    let templ = format!("{}/$cluster.conf", d.display());
    let (path, _) = c2.read_conf_file(Some(&templ), None, None).unwrap();
    assert_eq!(path, prod);

    // The name is fixed at the first read.
    let other = d.join("other.conf");
    std::fs::write(&other, "[global]\n").unwrap();
    c.read_conf_file(Some(other.to_str().unwrap()), None, None)
        .unwrap();
    assert_eq!(c.cluster(), "prod");

    // An explicit cluster is never overridden by a path.
    let mut c = Config::with_cluster(EntityName::admin(), "mine");
    c.read_conf_file(Some(prod.to_str().unwrap()), None, None)
        .unwrap();
    assert_eq!(c.cluster(), "mine");

    // NULL path: CEPH_CONF decides; the cluster stays "ceph".
    let mut c = test_config();
    let (path, _) = c
        .read_conf_file(None, Some(prod.to_str().unwrap()), None)
        .unwrap();
    assert_eq!(path, prod);
    assert_eq!(c.cluster(), "ceph");

    let mut c = test_config();
    let e = c
        .read_conf_file(Some(d.join("nope.conf").to_str().unwrap()), None, None)
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ENOENT);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn ceph_args_parsing() {
    let a = parse_ceph_args(&[
        "--id",
        "glance",
        "-c",
        "/etc/x.conf",
        "--rbd-cache-size",
        "4M",
        "--rbd_cache",
        "--mon_host=1.2.3.4",
        "-k",
        "/k",
        "-m",
        "5.6.7.8",
        "--size",
        "10G",
        "create",
        "--cluster",
        "prod",
        "--debug-ms=1",
        "--",
        "--rbd_cache_size",
        "1",
    ])
    .unwrap();
    assert_eq!(a.entity, Some(EntityName::client("glance").unwrap()));
    assert_eq!(a.conf.as_deref(), Some("/etc/x.conf"));
    assert_eq!(a.cluster.as_deref(), Some("prod"));
    assert_eq!(
        a.options,
        vec![
            ("rbd_cache_size".to_string(), "4M".to_string()),
            ("rbd_cache".to_string(), "true".to_string()),
            ("mon_host".to_string(), "1.2.3.4".to_string()),
            ("keyring".to_string(), "/k".to_string()),
            ("mon_host".to_string(), "5.6.7.8".to_string()),
            ("debug_ms".to_string(), "1".to_string()),
        ]
    );
    assert_eq!(
        a.rest,
        vec!["--size", "10G", "create", "--", "--rbd_cache_size", "1"]
    );

    let a = parse_ceph_args(&["-n", "osd.0", "--user=admin"]).unwrap();
    assert_eq!(a.entity, Some(EntityName::admin()));
    let a = parse_ceph_args(&["--name=mon.a"]).unwrap();
    assert_eq!(a.entity.unwrap().to_string(), "mon.a");
    let a = parse_ceph_args(&["--rbd_cache=false", "-i", "x"]).unwrap();
    assert_eq!(
        a.options,
        vec![("rbd_cache".to_string(), "false".to_string())]
    );
    assert_eq!(a.rest, vec!["-i", "x"]);

    assert_eq!(
        parse_ceph_args(&["--id"]).unwrap_err(),
        ConfigError::MissingValue("--id".to_string())
    );
    assert!(matches!(
        parse_ceph_args(&["--rbd_cache_size"]).unwrap_err(),
        ConfigError::MissingValue(_)
    ));
    assert!(matches!(
        parse_ceph_args(&["-n", "admin"]).unwrap_err(),
        ConfigError::Entity(_)
    ));
    assert_eq!(
        parse_ceph_args(&["--id", "a b"]).unwrap_err().errno(),
        Errno::EINVAL
    );
    let empty: [&str; 0] = [];
    assert_eq!(parse_ceph_args(&empty).unwrap(), CephArgs::default());
}

#[test]
fn arg_strings_and_errno_conversion() {
    let mut c = test_config();
    let args = c
        .apply_arg_string("--rbd_cache_size 4M -n client.x extra", Level::CmdLine)
        .unwrap();
    assert_eq!(args.rest, vec!["extra"]);
    assert_eq!(
        c.get_with_source("rbd_cache_size").unwrap(),
        ("4194304".to_string(), Level::CmdLine)
    );
    assert_eq!(
        Errno::from(c.set("nope", "1", Level::Override).unwrap_err()),
        Errno::ENOENT
    );
}

#[test]
fn env_args_splitting() {
    assert_eq!(
        split_env_args("  --a 1\t--b='x y' \"c \\\" d\" ''  ").unwrap(),
        vec!["--a", "1", "--b=x y", "c \" d", ""]
    );
    assert!(split_env_args("--a 'x").is_err());
    assert!(split_env_args("--a \"x").is_err());
    assert!(split_env_args("--a \"x\\").is_err());
    assert_eq!(split_env_args("").unwrap(), Vec::<String>::new());
}

#[test]
fn env_is_applied_at_env_level() {
    let mut c = test_config();
    c.set("rbd_cache_max_dirty", "8", Level::File).unwrap();
    let env = |k: &str| match k {
        "CEPH_ARGS" => Some("--rbd_cache_max_dirty=4 --id glance --keyring /a".to_string()),
        "CEPH_KEYRING" => Some("/b".to_string()),
        _ => None,
    };
    let args = c.apply_env(&env).unwrap();
    assert_eq!(args.entity.unwrap().to_string(), "client.glance");
    assert_eq!(
        c.get_with_source("rbd_cache_max_dirty").unwrap(),
        ("4".to_string(), Level::Env)
    );
    // CEPH_ARGS is applied after CEPH_KEYRING.
    assert_eq!(c.get("keyring").as_deref(), Some("/a"));
    let mut c = test_config();
    c.apply_env(&|k: &str| (k == "CEPH_KEYRING").then(|| "/b".to_string()))
        .unwrap();
    assert_eq!(c.get("keyring").as_deref(), Some("/b"));
    let e = c
        .apply_env(&|k: &str| (k == "CEPH_ARGS").then(|| "--rbd_cache=maybe".to_string()))
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    // `--rbd_cache` alone is true; "maybe" then is a stray word for the caller.
    let args = c
        .apply_env(&|k: &str| (k == "CEPH_ARGS").then(|| "--rbd_cache maybe".to_string()))
        .unwrap();
    assert_eq!(args.rest, vec!["maybe"]);
    let e = c
        .apply_env(&|k: &str| (k == "CEPH_ARGS").then(|| "--no_such_thing=1 --id 'x".to_string()))
        .unwrap_err();
    assert!(matches!(e, ConfigError::UnterminatedQuote(_)));
}

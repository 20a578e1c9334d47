//! The networked object layer: `quarry-client` connected with `mon_host`,
//! the entity name and its key (`key`, `keyfile`, or the `keyring` list,
//! as librados resolves them).

use std::sync::Arc;

use quarry_client::{ClientTimeouts, ClusterClient};
use quarry_common::entity::EntityName;
use quarry_common::keyring::Keyring;
use quarry_common::monhost::{parse_mon_host, MonProto};
use quarry_common::Errno;
use quarry_rados::Rados;

use crate::config::Config;
use crate::engine::{CError, CResult};
use crate::rt;

/// Monitor addresses from `mon_host` (Ceph's forms: `a:p,b:p`, `;`/space
/// lists, `[v2:a:p,v1:a:p]` vectors), one per monitor; `EINVAL` if malformed.
pub fn mon_addrs(mon_host: &str) -> CResult<Vec<String>> {
    let mons = parse_mon_host(mon_host)
        .map_err(|e| CError::new(Errno::EINVAL, format!("mon_host: {e}")))?;
    let mut out: Vec<String> = Vec::new();
    for m in mons {
        let Some(a) = m.0.first() else { continue };
        let default_port = if a.proto == Some(MonProto::V2) {
            3300
        } else {
            6789
        };
        let s = a.connect_string(default_port);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The base64 key of the configured entity: `key`, then `keyfile`, then the
/// first readable file of `keyring` that has the entity.
fn find_key(conf: &Config) -> CResult<String> {
    let key = conf.get("key")?;
    if !key.trim().is_empty() {
        return Ok(key.trim().to_string());
    }
    let keyfile = conf.get("keyfile")?;
    if !keyfile.trim().is_empty() {
        let k = std::fs::read_to_string(keyfile.trim())
            .map_err(|e| CError::new(Errno::ENOENT, format!("keyfile {}: {e}", keyfile.trim())))?;
        return Ok(k.trim().to_string());
    }
    let name = conf.entity_name();
    let entity = EntityName::parse(&name).ok();
    let list = conf.get("keyring")?;
    let mut read_any = false;
    for path in list
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Ok(ring) = Keyring::load(std::path::Path::new(path)) else {
            continue;
        };
        read_any = true;
        if let Some(k) = entity.as_ref().and_then(|e| ring.key_for(e)) {
            return Ok(k.to_base64());
        }
    }
    if read_any {
        // A keyring was found but does not know this entity: the monitor
        // would refuse it, as Ceph does (EACCES), e.g. `id=client.glance`
        // looking for `client.client.glance`.
        eprintln!("quarry: no key for {name} in keyring {list}: (13) Permission denied");
        return Err(CError::new(Errno::EACCES, format!("no key for {name}")));
    }
    eprintln!("quarry: unable to find a keyring on {list}: (2) No such file or directory");
    Err(CError::new(Errno::ENOENT, format!("no key for {name}")))
}

/// The monitors' config database values for an entity: (option, value).
pub type MonValues = Vec<(String, String)>;

/// The object layer, the monitors' config values for this client, and the
/// cluster client itself (none when embedded).
pub type Backend = (Arc<dyn Rados>, MonValues, Option<Arc<ClusterClient>>);

/// Connect to the cluster named by `mon_host` with the configured key.
/// Also returns the monitors' config database values for this entity
/// (name, value), which `rados_connect` applies at the monitor level;
/// empty if the monitors cannot answer.
pub fn connect(conf: &Config) -> CResult<Backend> {
    let addrs = mon_addrs(&conf.get("mon_host")?)?;
    if addrs.is_empty() {
        return Err(CError::new(Errno::ENOENT, "no monitor address"));
    }
    // Encryption asked for (`secure` alone) is refused, never dropped.
    for name in quarry_common::options::CLIENT_CON_MODE_OPTIONS {
        let v = conf.get(name)?;
        quarry_common::options::con_modes_supported(&v).map_err(|e| {
            eprintln!("quarry: {name} = {v}: {e}");
            CError::new(Errno::EINVAL, format!("{name} = {v}: {e}"))
        })?;
    }
    let key = find_key(conf)?;
    let secret = quarry_auth::Secret::from_base64(&key)
        .map_err(|e| CError::new(Errno::EINVAL, format!("bad key: {e}")))?;
    let timeouts = ClientTimeouts::from_options(
        conf.get_u64("client_mount_timeout"),
        conf.get_u64("rados_osd_op_timeout"),
        conf.get_u64("ms_connection_ready_timeout"),
    )
    .with_mon_ping(
        conf.get_f64("mon_client_ping_interval"),
        conf.get_f64("mon_client_ping_timeout"),
    );
    let entity = conf.entity_name();
    // Process-wide, as the connections it makes outlive this call.
    quarry_proto::SignPolicy::set_global(quarry_proto::SignPolicy {
        sign: conf.get_bool("cephx_sign_messages"),
        require: conf.get_bool("cephx_require_signatures"),
        require_cluster: conf.get_bool("cephx_cluster_require_signatures"),
        require_service: conf.get_bool("cephx_service_require_signatures"),
        daemon: false,
    });
    let (client, mon_values) = rt::block_on(async move {
        let client = ClusterClient::connect(addrs, &entity, secret, timeouts).await?;
        let values = match client.monc().config_for(&entity).await {
            Ok(v) => v.into_iter().map(|e| (e.name, e.value)).collect(),
            Err(_) => Vec::new(),
        };
        Ok::<_, quarry_rados::RadosError>((client, values))
    })
    .map_err(|e| {
        eprintln!("quarry: {e}");
        CError::from(e)
    })?;
    let rados: Arc<dyn Rados> = client.clone();
    Ok((rados, mon_values, Some(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mon_host_forms() {
        assert_eq!(
            mon_addrs("127.0.0.1:6789,127.0.0.1:6790").unwrap(),
            vec!["127.0.0.1:6789", "127.0.0.1:6790"]
        );
        assert_eq!(
            mon_addrs("[v2:10.0.0.1:3300,v1:10.0.0.1:6789]").unwrap(),
            vec!["10.0.0.1:3300"]
        );
        assert_eq!(
            mon_addrs("10.0.0.1; 10.0.0.2").unwrap(),
            vec!["10.0.0.1:6789", "10.0.0.2:6789"]
        );
        assert!(mon_addrs("[v2:1.2.3.4:3300").is_err());
    }
}

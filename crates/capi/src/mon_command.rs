//! `rados_mon_command`: the monitor commands clients send as JSON, the
//! subset OpenStack's drivers use for capacity (Cinder's pool stats:
//! `df`, `osd pool get-quota`; pool listings), the `osd pool application`
//! commands management tools send (Proxmox, Terraform providers), and the
//! cluster's capacity behind `rados_cluster_stat` (Nova reports it as the
//! host's disk).

use quarry_common::Errno;
use quarry_monc::{report, AppOp, MonCommand, MonReply};
use serde_json::{json, Value};

use crate::cluster::Connection;
use crate::engine::{CError, CResult};

/// Filesystem bytes and bytes available under the cluster's OSDs (their
/// latest reports to the monitors), or under the embedded store.
pub async fn capacity(conn: &Connection) -> CResult<(u64, u64)> {
    match &conn.client {
        Some(client) => match client.monc().command(MonCommand::OsdDf).await {
            Ok(MonReply::OsdUsage(v)) => Ok(v
                .iter()
                .fold((0, 0), |(t, a), (_, ot, oa)| (t + ot, a + (*oa).min(*ot)))),
            Ok(other) => Err(CError::new(
                Errno::EIO,
                format!("osd df: unexpected reply {other:?}"),
            )),
            Err(e) => Err(CError::new(e.errno(), format!("osd df: {e}"))),
        },
        None => {
            let dir = if conn.embedded_dir.is_empty() {
                "/"
            } else {
                conn.embedded_dir.as_str()
            };
            quarry_common::fsspace::fs_space(std::path::Path::new(dir))
                .map_err(|e| CError::new(Errno::EIO, format!("statvfs {dir}: {e}")))
        }
    }
}

/// Replication size of each pool (1 when embedded: one copy).
async fn pool_sizes(conn: &Connection) -> CResult<std::collections::BTreeMap<i64, u64>> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(client) = &conn.client {
        let map = client.monc().map();
        for p in map.pools.values() {
            out.insert(p.id, u64::from(p.size.max(1)));
        }
    }
    Ok(out)
}

/// Run one JSON command: `(output, status string)`; unknown commands are
/// `EINVAL` with Ceph's words.
pub async fn run(conn: &Connection, cmd: &str) -> CResult<(Vec<u8>, String)> {
    let v: Value = serde_json::from_str(cmd)
        .map_err(|e| CError::new(Errno::EINVAL, format!("command is not JSON: {e}")))?;
    let prefix = v["prefix"].as_str().unwrap_or_default();
    match prefix {
        "df" => df(conn).await,
        "osd pool get-quota" => {
            let pool = v["pool"]
                .as_str()
                .ok_or_else(|| CError::new(Errno::EINVAL, "osd pool get-quota: no pool"))?;
            let id = conn
                .rados
                .pool_lookup(pool)
                .await
                .map_err(|e| CError::new(e.errno, format!("unrecognized pool '{pool}'")))?;
            let q = quota(conn, pool).await?;
            let out = json!({"pool_name": pool, "pool_id": id,
                "quota_max_objects": q.max_objects, "quota_max_bytes": q.max_bytes});
            Ok((out.to_string().into_bytes(), String::new()))
        }
        "osd pool set-quota" => {
            let arg = |k: &str| {
                v[k].as_str()
                    .map(str::to_string)
                    .or_else(|| v[k].as_u64().map(|n| n.to_string()))
                    .ok_or_else(|| CError::new(Errno::EINVAL, format!("osd pool set-quota: no {k}")))
            };
            let (pool, field, val) = (arg("pool")?, arg("field")?, arg("val")?);
            let value = match field.as_str() {
                "max_bytes" => quarry_common::size::parse_size(&val, quarry_common::size::SizeUnit::Bytes)
                    .map_err(|e| CError::new(Errno::EINVAL, format!("error parsing value '{val}': {e}")))?,
                "max_objects" => val.trim().parse::<u64>().map_err(|_| {
                    CError::new(Errno::EINVAL, format!("error parsing value '{val}': not a whole number of objects"))
                })?,
                other => {
                    return Err(CError::new(
                        Errno::EINVAL,
                        format!("unrecognized field '{other}' (max_objects or max_bytes)"),
                    ))
                }
            };
            let client = conn.client.as_ref().ok_or_else(|| {
                CError::new(Errno::EOPNOTSUPP, "osd pool set-quota needs a cluster (the embedded backend has no monitors)")
            })?;
            let cmd = quarry_monc::MonCommand::PoolSetQuota { name: pool.clone(), field: field.clone(), value };
            client
                .monc()
                .command(cmd)
                .await
                .map_err(|e| CError::new(e.errno(), e.to_string()))?;
            Ok((Vec::new(), format!("set-quota {field} = {value} for pool {pool}")))
        }
        "osd pool ls" | "osd lspools" => {
            let pools = conn.rados.pool_list().await?;
            let out = if prefix == "osd pool ls" {
                json!(pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
            } else {
                json!(pools
                    .iter()
                    .map(|p| json!({"poolnum": p.id, "poolname": p.name}))
                    .collect::<Vec<_>>())
            };
            Ok((out.to_string().into_bytes(), String::new()))
        }
        "osd pool application enable"
        | "osd pool application disable"
        | "osd pool application set"
        | "osd pool application rm" => pool_application(conn, prefix, &v).await,
        "osd pool application get" => pool_application_get(conn, &v).await,
        "status" | "health" => status(conn, prefix, &v).await,
        other => Err(CError::new(
            Errno::EINVAL,
            format!("command not known: '{other}' (this library answers df, osd pool get-quota, osd pool set-quota, osd pool ls, osd lspools, osd pool application enable|disable|set|rm|get, status, health)"),
        )),
    }
}

/// The monitors' client, or `EOPNOTSUPP` for the embedded backend.
fn monc_of<'a>(
    conn: &'a Connection,
    what: &str,
) -> CResult<&'a std::sync::Arc<quarry_monc::MonClient>> {
    conn.client.as_ref().map(|c| c.monc()).ok_or_else(|| {
        CError::new(
            Errno::EOPNOTSUPP,
            format!("{what} needs a cluster (the embedded backend has no monitors)"),
        )
    })
}

/// A string argument of a JSON command, or `EINVAL` naming it.
fn str_arg<'a>(v: &'a Value, prefix: &str, k: &str) -> CResult<&'a str> {
    v[k].as_str()
        .ok_or_else(|| CError::new(Errno::EINVAL, format!("{prefix}: no {k}")))
}

/// `status` (JSON only) and `health [detail]` (JSON or Ceph's text), as
/// `ceph` prints them: the same builders (`quarry_monc::report`).
async fn status(conn: &Connection, prefix: &str, v: &Value) -> CResult<(Vec<u8>, String)> {
    let json_out = v["format"].as_str().is_some_and(|f| f.starts_with("json"));
    let monc = monc_of(conn, prefix)?;
    let st = match monc.command(MonCommand::Status).await {
        Ok(MonReply::Status(s)) => s,
        Ok(other) => {
            return Err(CError::new(
                Errno::EIO,
                format!("{prefix}: unexpected reply {other:?}"),
            ))
        }
        Err(e) => return Err(CError::new(e.errno(), e.to_string())),
    };
    if prefix == "health" {
        let detail = v["detail"].as_str() == Some("detail");
        let health = st.health.to_string();
        let out = if json_out {
            report::health_json(&health, &st.checks, detail).to_string()
        } else {
            report::health_text(&health, &st.checks, detail)
        };
        return Ok((out.into_bytes(), String::new()));
    }
    if !json_out {
        return Err(CError::new(
            Errno::EINVAL,
            "status: this library answers it in JSON only (pass \"format\": \"json\")",
        ));
    }
    let map = monc
        .refresh_map()
        .await
        .map_err(|e| CError::new(e.errno(), e.to_string()))?;
    let (mut objects, mut bytes) = (0u64, 0u64);
    for p in conn.rados.pool_list().await? {
        let s = conn.rados.pool_stat(p.id).await?;
        objects += s.num_objects;
        bytes += s.num_bytes;
    }
    Ok((
        report::status_json(&st, &map, objects, bytes)
            .to_string()
            .into_bytes(),
        String::new(),
    ))
}

/// `osd pool application enable|disable|set|rm`; the status string is
/// Ceph's text from the monitors.
async fn pool_application(
    conn: &Connection,
    prefix: &str,
    v: &Value,
) -> CResult<(Vec<u8>, String)> {
    let pool = str_arg(v, prefix, "pool")?.to_string();
    let app = str_arg(v, prefix, "app")?.to_string();
    // Ceph's JSON form carries the flag as a boolean (or its name).
    let force = v["yes_i_really_mean_it"].as_bool().unwrap_or(false)
        || v["yes_i_really_mean_it"]
            .as_str()
            .is_some_and(|s| s == "true" || s == "--yes-i-really-mean-it");
    let op = match prefix.rsplit(' ').next() {
        Some("enable") => AppOp::Enable { app, force },
        Some("disable") => AppOp::Disable { app, force },
        Some("set") => AppOp::Set {
            app,
            key: str_arg(v, prefix, "key")?.to_string(),
            value: str_arg(v, prefix, "value")?.to_string(),
        },
        _ => AppOp::Rm {
            app,
            key: str_arg(v, prefix, "key")?.to_string(),
        },
    };
    let monc = monc_of(conn, prefix)?;
    match monc.command(MonCommand::PoolApplication { pool, op }).await {
        Ok(MonReply::Applied { message, .. }) => Ok((Vec::new(), message)),
        Ok(other) => Err(CError::new(
            Errno::EIO,
            format!("{prefix}: unexpected reply {other:?}"),
        )),
        Err(e) => Err(CError::new(e.errno(), e.to_string())),
    }
}

/// `osd pool application get POOL [APP [KEY]]`: JSON of the pool's
/// applications or of one's keys; a key's value as plain text.
async fn pool_application_get(conn: &Connection, v: &Value) -> CResult<(Vec<u8>, String)> {
    let prefix = "osd pool application get";
    let pool = str_arg(v, prefix, "pool")?.to_string();
    let monc = monc_of(conn, prefix)?;
    let apps = match monc
        .command(MonCommand::PoolApplicationGet { pool: pool.clone() })
        .await
    {
        Ok(MonReply::PoolApplications(a)) => a,
        Ok(other) => {
            return Err(CError::new(
                Errno::EIO,
                format!("{prefix}: unexpected reply {other:?}"),
            ))
        }
        Err(e) => return Err(CError::new(e.errno(), e.to_string())),
    };
    let Some(app) = v["app"].as_str() else {
        return Ok((json!(apps).to_string().into_bytes(), String::new()));
    };
    let keys = apps.get(app).ok_or_else(|| {
        CError::new(
            Errno::ENOENT,
            format!("application '{app}' is not enabled on pool '{pool}'"),
        )
    })?;
    match v["key"].as_str() {
        None => Ok((json!(keys).to_string().into_bytes(), String::new())),
        Some(k) => keys
            .get(k)
            .map(|val| (val.clone().into_bytes(), String::new()))
            .ok_or_else(|| {
                CError::new(
                    Errno::ENOENT,
                    format!("application '{app}' on pool '{pool}' does not have key '{k}'"),
                )
            }),
    }
}

/// A pool's quotas as the monitors keep them; the embedded backend has
/// none (0: no limit, as Ceph reports a pool without quotas).
async fn quota(conn: &Connection, pool: &str) -> CResult<quarry_monc::PoolQuotaInfo> {
    let Some(client) = &conn.client else {
        return Ok(Default::default());
    };
    let cmd = quarry_monc::MonCommand::PoolGetQuota {
        name: pool.to_string(),
    };
    match client.monc().command(cmd).await {
        Ok(quarry_monc::MonReply::PoolQuota(q)) => Ok(q),
        Ok(other) => Err(CError::new(
            Errno::EIO,
            format!("osd pool get-quota: unexpected reply {other:?}"),
        )),
        Err(e) => Err(CError::new(e.errno(), e.to_string())),
    }
}

/// Ceph's `df` JSON: cluster totals and, per pool, what it stores, the raw
/// bytes its copies use and what it can still take (`max_avail`: the free
/// raw space divided by its replica count, capped by its byte quota).
async fn df(conn: &Connection) -> CResult<(Vec<u8>, String)> {
    let (total, avail) = capacity(conn).await?;
    let sizes = pool_sizes(conn).await?;
    let mut pools = Vec::new();
    for p in conn.rados.pool_list().await? {
        let st = conn.rados.pool_stat(p.id).await?;
        let size = sizes.get(&p.id).copied().unwrap_or(1);
        let used = st.num_bytes.saturating_mul(size);
        let mut max_avail = avail / size;
        let q = quota(conn, &p.name).await?;
        if q.max_bytes > 0 {
            max_avail = max_avail.min(q.max_bytes.saturating_sub(st.num_bytes));
        }
        let percent_used = if used + max_avail == 0 {
            0.0
        } else {
            used as f64 / (used + max_avail) as f64
        };
        pools.push(json!({"name": p.name, "id": p.id, "stats": {
            "stored": st.num_bytes, "objects": st.num_objects, "kb_used": used.div_ceil(1024),
            "bytes_used": used, "percent_used": percent_used, "max_avail": max_avail}}));
    }
    let used = total.saturating_sub(avail);
    let ratio = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    };
    let out = json!({
        "stats": {"total_bytes": total, "total_avail_bytes": avail, "total_used_bytes": used,
            "total_used_raw_bytes": used, "total_used_raw_ratio": ratio},
        "stats_by_class": {},
        "pools": pools,
    });
    Ok((out.to_string().into_bytes(), String::new()))
}

//! The network a networked job gets: one Docker bridge, [`JOB_NETWORK`], from which the node
//! itself is unreachable.
//!
//! Docker's host network (what `Network: Full` used to mean) shares the node's loopback, so a
//! job could call the node's API on 127.0.0.1; Docker's default bridge routes to the host
//! through its gateway, where the API listens on 0.0.0.0. On this bridge instead:
//! - the host drops every packet arriving from the bridge (`INPUT -i gadus-jobs0 -j DROP`):
//!   no address of the node (gateway, LAN, other bridges) answers a job, whatever the port;
//! - link-local addresses, cloud metadata services included, are dropped on the way out
//!   (`DOCKER-USER -i gadus-jobs0 -d 169.254.0.0/16 -j DROP`);
//! - containers on it cannot talk to each other (`enable_icc=false`), nor to other Docker
//!   networks (Docker's own isolation rules);
//! - everything else is masqueraded out, as on any bridge.
//!
//! Setting it up needs the rights Docker itself has over the host's firewall (root or
//! CAP_NET_ADMIN and the `iptables` command). Without them a networked job fails with a
//! message saying so: the node never falls back to a network it cannot fence.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;

/// The Docker network of networked jobs.
pub const JOB_NETWORK: &str = "gadus-jobs";

/// Its bridge interface on the host, named so the firewall rules can match it.
pub const JOB_BRIDGE: &str = "gadus-jobs0";

/// The firewall rules, as `(table, chain, rule)`; each is checked (`-C`) before it is inserted
/// at the top (`-I`), so setting up twice changes nothing.
fn rules() -> [(&'static str, &'static str, Vec<&'static str>); 2] {
    [
        ("filter", "INPUT", vec!["-i", JOB_BRIDGE, "-j", "DROP"]),
        ("filter", "DOCKER-USER", vec!["-i", JOB_BRIDGE, "-d", "169.254.0.0/16", "-j", "DROP"]),
    ]
}

/// Creates the network when it does not exist, then makes sure the firewall fences it.
pub async fn ensure(docker: &Docker) -> Result<(), String> {
    match docker.inspect_network(JOB_NETWORK, None).await {
        Ok(n) => {
            let bridge = n.options.as_ref().and_then(|o| o.get("com.docker.network.bridge.name"));
            if bridge.map(String::as_str) != Some(JOB_BRIDGE) {
                return Err(format!(
                    "a Docker network named {JOB_NETWORK} exists without the bridge {JOB_BRIDGE}; remove it (docker network rm {JOB_NETWORK}) so the node can make its own"
                ));
            }
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            let options: HashMap<String, String> = [
                ("com.docker.network.bridge.name", JOB_BRIDGE),
                ("com.docker.network.bridge.enable_icc", "false"),
                ("com.docker.network.bridge.enable_ip_masquerade", "true"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let request = NetworkCreateRequest {
                name: JOB_NETWORK.into(),
                driver: Some("bridge".into()),
                enable_ipv6: Some(false),
                options: Some(options),
                labels: Some(HashMap::from([("io.gadus.network".into(), "jobs".into())])),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => {}
                // Another node process on this engine made it first.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => return Err(format!("creating the Docker network {JOB_NETWORK}: {e}")),
            }
        }
        Err(e) => return Err(format!("inspecting the Docker network {JOB_NETWORK}: {e}")),
    }
    for (table, chain, rule) in rules() {
        let present = iptables(&[&["-t", table, "-C", chain], rule.as_slice()].concat()).await;
        if present.is_ok() {
            continue;
        }
        iptables(&[&["-t", table, "-I", chain, "1"], rule.as_slice()].concat())
            .await
            .map_err(|e| format!("fencing {JOB_BRIDGE} ({chain} {}): {e}", rule.join(" ")))?;
    }
    Ok(())
}

async fn iptables(args: &[&str]) -> Result<(), String> {
    // `-w`: wait for the xtables lock Docker may hold instead of failing.
    let out = tokio::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

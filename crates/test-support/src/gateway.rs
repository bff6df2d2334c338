//! `riskgate gateway` as a child process, its keys made by `riskgate gateway-key`, and an
//! agent's requests to it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{assert_success, http, riskgate_binary, Response, Service, ServiceConfig};

/// A key as `riskgate gateway-key --agent AGENT` made it: the key the agent sends and the
/// `[[gateway.keys]]` table for the configuration.
#[derive(Debug, Clone)]
pub struct AgentKey {
    pub agent: String,
    pub key: String,
    pub table: String,
}

impl AgentKey {
    /// A new key for `agent`, from the real command.
    pub fn new(agent: &str) -> AgentKey {
        let out = Command::new(riskgate_binary())
            .args(["gateway-key", "--agent", agent])
            .output()
            .unwrap();
        assert_success(&out, "riskgate gateway-key");
        let text = String::from_utf8(out.stdout).unwrap();
        let (key, table) = text.trim().split_once('\n').unwrap();
        AgentKey {
            agent: agent.to_owned(),
            key: key.trim().to_owned(),
            table: table.trim().to_owned(),
        }
    }

    /// The `Authorization` header's value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }
}

/// The configuration of a gateway in front of the service `c` describes: its `[kafka]`,
/// `[engine]` and `[integrity]`, a `[gateway]` on a free loopback port with `gateway` lines
/// added, and `keys`.
pub fn config_text(c: &ServiceConfig<'_>, gateway: &str, keys: &[&AgentKey]) -> String {
    let mut text = format!(
        "{}\n[gateway]\nlisten = \"127.0.0.1:0\"\n{gateway}\n",
        Service::config_text(c)
    );
    for k in keys {
        text.push_str(&k.table);
        text.push('\n');
    }
    text
}

/// A running gateway and the address it serves on.
pub struct Gateway {
    pub process: Service,
    pub address: String,
}

impl Gateway {
    /// Starts `riskgate gateway` with this configuration and waits until it has read the
    /// decisions up to its start.
    pub fn start(config_text: &str) -> Gateway {
        let mut process = Service::spawn("gateway", config_text);
        let e = process.wait_event("serving the gateway API", Duration::from_secs(30), |_| true);
        let address = e["address"].as_str().expect("an address").to_owned();
        process.wait_event("ready", Duration::from_secs(60), |e| {
            e["message"] == "read up to the start; ready"
        });
        Gateway { process, address }
    }

    /// `method path` with `key`'s bearer (none: no `Authorization`) and `body` as
    /// `content_type`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&AgentKey>,
        body: Option<(&str, &str)>,
        more: &[(&str, &str)],
    ) -> Response {
        let bearer = key.map(AgentKey::bearer);
        let mut headers: Vec<(&str, &str)> = more.to_vec();
        if let Some(b) = &bearer {
            headers.push(("Authorization", b));
        }
        if let Some((content_type, _)) = body {
            headers.push(("Content-Type", content_type));
        }
        http(&self.address, method, path, &headers, body.map(|(_, b)| b))
    }

    /// `POST /v1/intents?wait=...` of `intent` as JSON by `key`.
    pub fn propose(&self, key: &AgentKey, intent: &Value, wait: &str) -> Response {
        self.request(
            "POST",
            &format!("/v1/intents?wait={wait}"),
            Some(key),
            Some(("application/json", &intent.to_string())),
            &[],
        )
    }

    /// `GET location?wait=...` by `key`.
    pub fn get(&self, key: &AgentKey, location: &str, wait: &str) -> Response {
        self.request(
            "GET",
            &format!("{location}?wait={wait}"),
            Some(key),
            None,
            &[],
        )
    }

    /// The value of the metric line that starts with `series` (name and labels), if any.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let r = http(&self.address, "GET", "/metrics", &[], None);
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

//! The incident scenario: `testdata/scenarios/incident.toml`, parsed and laid out in time.
//!
//! All times are offsets in seconds from the anchor `T`; rendering to wall-clock time
//! happens in the modules that serve or write data, so one scenario can be anchored at
//! any moment.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;

/// The scenario the tests and the demo use, compiled into the crate.
pub const INCIDENT_TOML: &str = include_str!("../../testdata/scenarios/incident.toml");

/// Seconds a replaced pod keeps running after the new ReplicaSet was created.
pub const ROLLOUT_HANDOVER_SECS: i64 = 30;
/// Seconds from a pod's creation to its first container start (scheduling, pull).
pub const POD_STARTUP_SECS: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("the scenario file is not valid")]
    Parse(#[source] toml::de::Error),
    #[error("the scenario is inconsistent: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub cluster: Cluster,
    pub history: History,
    #[serde(rename = "deployment")]
    pub deployments: Vec<Deployment>,
    pub postgres: PostgresScenario,
    pub neo4j: Neo4jScenario,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub context: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub kubernetes_version: String,
    pub token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    #[serde(with = "human_duration")]
    pub span: Duration,
    #[serde(with = "human_duration")]
    pub scrape_interval: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub name: String,
    pub created: Offset,
    pub replicas: u32,
    pub port: u16,
    pub requests_per_second: f64,
    pub cpu_cores: f64,
    pub working_set: Quantity,
    #[serde(default)]
    pub init_container: Option<InitContainer>,
    #[serde(rename = "revision")]
    pub revisions: Vec<Revision>,
    #[serde(default)]
    pub oom: Option<OomPlan>,
    pub traffic: Vec<Traffic>,
    #[serde(rename = "log")]
    pub logs: Vec<LogStream>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitContainer {
    pub name: String,
    pub args: Vec<String>,
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub number: i64,
    pub created: Offset,
    pub image: String,
    pub resources: Resources,
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    /// `secret-name/key`: rendered as a `valueFrom.secretKeyRef`.
    #[serde(default)]
    pub secret_ref: Option<String>,
    /// A value that must never reach a bundle in clear.
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OomPlan {
    pub kills: Vec<Offset>,
    pub working_set_start: Quantity,
    pub working_set_at_end: Quantity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub from: Offset,
    /// `[le, share]` pairs; see the scenario file.
    pub latency: Vec<(f64, f64)>,
    pub error_ratio: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStream {
    #[serde(default)]
    pub from: Option<Offset>,
    #[serde(default)]
    pub until: Option<Offset>,
    #[serde(with = "human_duration")]
    pub every: Duration,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresScenario {
    pub database: String,
    pub target: String,
    pub schema: Vec<String>,
    #[serde(rename = "session")]
    pub sessions: Vec<SessionPlan>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPlan {
    pub name: String,
    pub application_name: String,
    #[serde(default)]
    pub setup: Vec<String>,
    #[serde(default)]
    pub run: Option<String>,
    pub expect: SessionState,
    #[serde(default)]
    pub blocked_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Active,
    LockWait,
    IdleInTransaction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neo4jScenario {
    pub version: String,
    pub legacy_version: String,
    pub edition: String,
    pub database: String,
    pub user: String,
    pub password: String,
    #[serde(rename = "transaction")]
    pub transactions: Vec<Neo4jTransaction>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neo4jTransaction {
    pub transaction_id: String,
    pub query_id: String,
    pub connection_id: String,
    pub username: String,
    pub client_address: String,
    #[serde(with = "human_duration")]
    pub elapsed: Duration,
    pub query: String,
}

/// Seconds relative to the anchor; negative is before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offset(pub i64);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (sign, magnitude) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.as_str()),
        };
        let duration = humantime::parse_duration(magnitude)
            .map_err(|error| serde::de::Error::custom(format!("offset `{text}`: {error}")))?;
        Ok(Offset(sign * duration.as_secs() as i64))
    }
}

/// A Kubernetes memory quantity in binary units (`256Mi`), kept as written and in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    pub text: String,
    pub bytes: u64,
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (digits, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let scale: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown quantity unit `{other}`"
                )));
            }
        };
        let number: u64 = digits
            .parse()
            .map_err(|error| serde::de::Error::custom(format!("quantity `{text}`: {error}")))?;
        Ok(Quantity {
            bytes: number * scale,
            text,
        })
    }
}

mod human_duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|error| serde::de::Error::custom(format!("duration `{text}`: {error}")))
    }
}

/// One pod of one revision, with the container instances it ran.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub name: String,
    pub deployment: usize,
    pub revision: usize,
    pub created: i64,
    /// When the pod went away; `None` while it still runs at `T`.
    pub deleted: Option<i64>,
    /// The main container's instances, oldest first; the last one runs at `T` unless
    /// the pod was deleted.
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Copy)]
pub struct Instance {
    pub started: i64,
    pub finished: Option<i64>,
    pub oom_killed: bool,
}

impl PodPlan {
    pub fn is_running(&self) -> bool {
        self.deleted.is_none()
    }

    pub fn current(&self) -> &Instance {
        self.instances
            .last()
            .expect("every pod has a container instance")
    }

    pub fn previous(&self) -> Option<&Instance> {
        self.instances
            .len()
            .checked_sub(2)
            .map(|index| &self.instances[index])
    }

    pub fn restart_count(&self) -> usize {
        self.instances.len() - 1
    }
}

impl Scenario {
    /// The scenario shipped in `testdata/scenarios/incident.toml`.
    pub fn incident() -> Self {
        Self::parse(INCIDENT_TOML).expect("the shipped scenario is valid")
    }

    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(ScenarioError::Parse)?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        for deployment in &self.deployments {
            let name = &deployment.name;
            if deployment.revisions.is_empty() {
                return Err(ScenarioError::Invalid(format!("`{name}` has no revision")));
            }
            if !deployment
                .revisions
                .windows(2)
                .all(|pair| pair[0].created < pair[1].created)
            {
                return Err(ScenarioError::Invalid(format!(
                    "`{name}`: revisions must be listed oldest first"
                )));
            }
            for traffic in &deployment.traffic {
                let last = traffic.latency.last().map(|(_, share)| *share);
                if last != Some(1.0) {
                    return Err(ScenarioError::Invalid(format!(
                        "`{name}`: every latency profile must end with a share of 1"
                    )));
                }
            }
        }
        for session in &self.postgres.sessions {
            if let Some(blocker) = &session.blocked_by
                && !self
                    .postgres
                    .sessions
                    .iter()
                    .any(|other| &other.name == blocker)
            {
                return Err(ScenarioError::Invalid(format!(
                    "session {} is blocked by unknown session {blocker}",
                    session.name
                )));
            }
        }
        Ok(())
    }

    /// The start of the history, as an offset (`-span`).
    pub fn history_start(&self) -> i64 {
        -(self.history.span.as_secs() as i64)
    }

    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|deployment| deployment.name == name)
    }

    /// Every pod any revision ran during the history, in deployment and revision order.
    pub fn pods(&self) -> Vec<PodPlan> {
        let mut pods = Vec::new();
        for (index, deployment) in self.deployments.iter().enumerate() {
            for (revision_index, revision) in deployment.revisions.iter().enumerate() {
                let next = deployment.revisions.get(revision_index + 1);
                let deleted = next.map(|next| next.created.0 + ROLLOUT_HANDOVER_SECS);
                if deleted.is_some_and(|deleted| deleted < self.history_start()) {
                    continue;
                }
                let created = revision.created.0;
                let is_current = next.is_none();
                for replica in 0..deployment.replicas {
                    let kills = match (&deployment.oom, is_current) {
                        (Some(oom), true) => oom.kills.iter().map(|kill| kill.0).collect(),
                        _ => Vec::new(),
                    };
                    pods.push(PodPlan {
                        name: pod_name(deployment, revision, replica),
                        deployment: index,
                        revision: revision_index,
                        created,
                        deleted,
                        instances: instances(created + POD_STARTUP_SECS, &kills, deleted),
                    });
                }
            }
        }
        pods
    }
}

/// Container instances from `first_start`, ended by each kill and restarted after the
/// kubelet's crash-loop back-off (10 s, doubling).
fn instances(first_start: i64, kills: &[i64], deleted: Option<i64>) -> Vec<Instance> {
    let mut instances = Vec::new();
    let mut started = first_start;
    let mut backoff = 10;
    for &kill in kills {
        instances.push(Instance {
            started,
            finished: Some(kill),
            oom_killed: true,
        });
        started = kill + backoff;
        backoff *= 2;
    }
    instances.push(Instance {
        started,
        finished: deleted,
        oom_killed: false,
    });
    instances
}

impl Deployment {
    pub fn current(&self) -> &Revision {
        self.revisions
            .last()
            .expect("checked: every deployment has a revision")
    }

    /// The traffic profile in force at `offset`.
    pub fn traffic_at(&self, offset: i64) -> &Traffic {
        self.traffic
            .iter()
            .rev()
            .find(|traffic| traffic.from.0 <= offset)
            .unwrap_or(&self.traffic[0])
    }
}

impl Scenario {
    /// The main container's working set in bytes at `offset`, for a pod that runs then:
    /// flat with a little noise, or, for a container that is OOM-killed, climbing from
    /// the plan's start value to just under the limit at each kill.
    pub fn working_set_at(&self, pod: &PodPlan, offset: i64) -> u64 {
        let deployment = &self.deployments[pod.deployment];
        let wobble = 1.0 + 0.02 * noise(self.history.seed, &pod.name, offset);
        let Some(oom) = deployment.oom.as_ref().filter(|_| pod.instances.len() > 1) else {
            return (deployment.working_set.bytes as f64 * wobble) as u64;
        };
        let instance = pod
            .instances
            .iter()
            .find(|instance| instance.finished.is_none_or(|end| offset < end))
            .unwrap_or_else(|| pod.current());
        let limit = deployment.revisions[pod.revision]
            .resources
            .memory_limit
            .bytes as f64;
        let start = oom.working_set_start.bytes as f64;
        let (end_value, end_time) = match instance.finished {
            Some(end) if instance.oom_killed => (limit * 0.995, end),
            _ => (oom.working_set_at_end.bytes as f64, 0),
        };
        let span = (end_time - instance.started).max(1) as f64;
        let progress = ((offset - instance.started) as f64 / span).clamp(0.0, 1.0);
        let value = start + (end_value - start) * progress;
        // Noise only below the ceiling, so the climb never passes the limit early.
        (value * (1.0 - 0.005 * (1.0 + noise(self.history.seed, &pod.name, offset)))) as u64
    }
}

/// The ReplicaSet name of a revision: the Deployment's name and a hash of its template,
/// in the alphabet Kubernetes uses for generated names.
pub fn replicaset_name(deployment: &Deployment, revision: &Revision) -> String {
    format!(
        "{}-{}",
        deployment.name,
        template_hash(deployment, revision)
    )
}

pub fn template_hash(deployment: &Deployment, revision: &Revision) -> String {
    safe_suffix(&format!("{}/{}", deployment.name, revision.number), 10)
}

fn pod_name(deployment: &Deployment, revision: &Revision, replica: u32) -> String {
    let key = format!("{}/{}/{replica}", deployment.name, revision.number);
    format!(
        "{}-{}",
        replicaset_name(deployment, revision),
        safe_suffix(&key, 5)
    )
}

/// A deterministic name suffix from the alphabet of Kubernetes' generated names.
pub fn safe_suffix(key: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut state = fnv1a(key.as_bytes());
    (0..len)
        .map(|_| {
            state = splitmix64(state);
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn splitmix64(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic noise in `[-1, 1]` for a key and an index.
pub(crate) fn noise(seed: u64, key: &str, index: i64) -> f64 {
    let state = splitmix64(seed ^ fnv1a(key.as_bytes()) ^ (index as u64).wrapping_mul(0x9e37));
    (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// An anchor in whole seconds, so offsets map to exact instants.
pub fn anchor_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

pub fn at(anchor: DateTime<Utc>, offset: i64) -> DateTime<Utc> {
    anchor + chrono::Duration::seconds(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenario_lays_out_the_readme() {
        let scenario = Scenario::incident();
        assert_eq!(scenario.history_start(), -3 * 3600);

        let checkout = scenario.deployment("checkout").unwrap();
        assert_eq!(checkout.current().number, 4);
        assert_eq!(checkout.current().created, Offset(-40 * 60));

        let pods = scenario.pods();
        let ingest: Vec<_> = pods
            .iter()
            .filter(|pod| scenario.deployments[pod.deployment].name == "ingest" && pod.is_running())
            .collect();
        assert_eq!(ingest.len(), 1);
        assert_eq!(ingest[0].restart_count(), 3);
        let previous = ingest[0].previous().unwrap();
        assert_eq!(previous.finished, Some(-30 * 60));
        assert!(previous.oom_killed);
        // Restarted after 10, 20 and 40 s of back-off.
        assert_eq!(ingest[0].current().started, -30 * 60 + 40);

        // Two checkout replicas of revision 3 ran until the hand-over, two of 4 run now.
        let checkout_pods: Vec<_> = pods
            .iter()
            .filter(|pod| scenario.deployments[pod.deployment].name == "checkout")
            .collect();
        assert_eq!(checkout_pods.len(), 4);
        assert_eq!(
            checkout_pods[0].deleted,
            Some(-40 * 60 + ROLLOUT_HANDOVER_SECS)
        );
    }

    #[test]
    fn quantities_and_offsets_parse() {
        let quantity: Quantity = toml::from_str::<toml::Table>("q = '256Mi'")
            .unwrap()
            .get("q")
            .cloned()
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(quantity.bytes, 256 * 1024 * 1024);
        let offset: Offset = toml::Value::String("-1h 30m".into()).try_into().unwrap();
        assert_eq!(offset, Offset(-5400));
    }

    #[test]
    fn suffixes_are_stable_and_safe() {
        let suffix = safe_suffix("checkout/4", 10);
        assert_eq!(suffix, safe_suffix("checkout/4", 10));
        assert_ne!(suffix, safe_suffix("checkout/3", 10));
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}

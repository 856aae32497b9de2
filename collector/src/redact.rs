//! Redaction rules: what is replaced before anything reaches the bundle or a log line.
//!
//! Each rule has a stable name that the manifest's `redactions` map counts by.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// Rule name for container `env[].value` in pods, ReplicaSets and Deployments.
pub(crate) const ENV_VALUE: &str = "env_value";
/// Rule name for passwords in connection strings and URLs.
pub(crate) const CONNECTION_PASSWORD: &str = "connection_password";

/// What replaces a redacted value.
pub(crate) const REDACTED: &str = "<redacted>";

/// Replaces every `env[].value` of the containers, init containers and ephemeral
/// containers in a pod spec, wherever the object keeps it (`spec` for a pod,
/// `spec.template.spec` for a ReplicaSet or Deployment). Returns how many were replaced.
///
/// Names and `valueFrom` stay: they say where a value comes from, not what it is.
pub(crate) fn env_values(object: &mut Value) -> u64 {
    let mut count = 0;
    for pointer in ["/spec", "/spec/template/spec"] {
        let Some(spec) = object.pointer_mut(pointer) else {
            continue;
        };
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(Value::Array(containers)) = spec.get_mut(list) else {
                continue;
            };
            for container in containers {
                let Some(Value::Array(env)) = container.get_mut("env") else {
                    continue;
                };
                for var in env {
                    if let Some(value) = var.get_mut("value") {
                        *value = Value::String(REDACTED.to_owned());
                        count += 1;
                    }
                }
            }
        }
    }
    count
}

static KEYWORD_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    // A conninfo value is either single-quoted (with backslash escapes) or runs to the
    // next space; in a URL query it runs to the next `&`.
    Regex::new(r#"(?i)\b(password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&]*)"#).expect("valid regex")
});

static USERINFO_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@").expect("valid regex")
});

/// Removes passwords from a PostgreSQL conninfo string or URL, both as `password=…` and
/// as URL userinfo. Returns the cleaned text and how many passwords were removed.
pub(crate) fn connection_string(text: &str) -> (String, u64) {
    let mut count = 0;
    let cleaned = USERINFO_PASSWORD.replace(text, |c: &regex::Captures<'_>| {
        count += 1;
        format!("{}:{REDACTED}@", &c[1])
    });
    let cleaned = KEYWORD_PASSWORD
        .replace_all(&cleaned, |c: &regex::Captures<'_>| {
            count += 1;
            format!("{}{REDACTED}", &c[1])
        })
        .into_owned();
    (cleaned, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_env_values_are_replaced_and_names_kept() {
        let mut pod = json!({
            "kind": "Pod",
            "spec": {
                "containers": [{"name": "app", "env": [
                    {"name": "DB_PASSWORD", "value": "hunter2-invented"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ]}],
                "initContainers": [{"name": "init", "env": [{"name": "TOKEN", "value": "abc"}]}]
            }
        });
        assert_eq!(env_values(&mut pod), 2);
        assert_eq!(pod["spec"]["containers"][0]["env"][0]["value"], REDACTED);
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["name"],
            "DB_PASSWORD"
        );
        assert!(
            pod["spec"]["containers"][0]["env"][1]
                .get("value")
                .is_none()
        );
        assert_eq!(
            pod["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["key"],
            "k"
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["env"][0]["value"],
            REDACTED
        );
    }

    #[test]
    fn deployment_template_env_values_are_replaced() {
        let mut deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": ""}]}
        ]}}}});
        assert_eq!(env_values(&mut deployment), 2);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"],
            REDACTED
        );
        assert_eq!(env_values(&mut json!({"spec": {}})), 0);
    }

    #[test]
    fn conninfo_passwords_are_removed() {
        let cases = [
            (
                "host=db port=5432 password=s3cret user=app",
                "host=db port=5432 password=<redacted> user=app",
                1,
            ),
            (
                "host=db password='a b\\'c' dbname=x",
                "host=db password=<redacted> dbname=x",
                1,
            ),
            ("host=db PASSWORD = x", "host=db PASSWORD = <redacted>", 1),
            ("host=db user=app", "host=db user=app", 0),
            (
                "postgresql://app:s3cret@db:5432/shop",
                "postgresql://app:<redacted>@db:5432/shop",
                1,
            ),
            (
                "postgres://app@db/shop?password=s3cret&sslmode=disable",
                "postgres://app@db/shop?password=<redacted>&sslmode=disable",
                1,
            ),
            ("postgresql://db/shop", "postgresql://db/shop", 0),
        ];
        for (input, want, n) in cases {
            assert_eq!(connection_string(input), (want.to_owned(), n), "{input}");
        }
    }
}

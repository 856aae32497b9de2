//! The four sources, and what the HTTP ones share: how transport errors map to a status
//! and how an endpoint is named without its credentials.

pub(crate) mod kubernetes;
pub(crate) mod neo4j;
pub(crate) mod postgres;
pub(crate) mod prometheus;

use sitrep_schemas::manifest::SourceStatus;

/// Status for a request that got no HTTP answer.
pub(crate) fn transport_status(err: &reqwest::Error) -> SourceStatus {
    if err.is_timeout() {
        SourceStatus::Timeout
    } else if err.is_connect() {
        SourceStatus::Unreachable
    } else if err.is_decode() {
        SourceStatus::Malformed
    } else {
        SourceStatus::Failed
    }
}

/// Status for an HTTP answer that is not a success.
pub(crate) fn http_status(code: u16) -> SourceStatus {
    match code {
        401 | 403 => SourceStatus::Forbidden,
        404 | 405 | 501 => SourceStatus::Unsupported,
        502..=504 => SourceStatus::Unreachable,
        _ => SourceStatus::Failed,
    }
}

/// The URL with user name and password removed, for names, logs and the bundle.
pub(crate) fn without_userinfo(url: &reqwest::Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string().trim_end_matches('/').to_owned()
}

/// A shared HTTP client: bounded connect time, no proxy from the environment so that a
/// collection goes exactly where its flags point.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .no_proxy()
        .user_agent(concat!("sitrep-collect/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        let url: reqwest::Url = "http://neo4j:invented-pw@127.0.0.1:7474/".parse().unwrap();
        assert_eq!(without_userinfo(&url), "http://127.0.0.1:7474");
    }
}

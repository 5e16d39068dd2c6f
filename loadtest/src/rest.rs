//! The little of the REST API the scenarios read: presence.

use std::time::Duration;

use anyhow::{Context, bail};
use teamhub_client::protocol::rest::PresenceResponse;

/// `http://host:port` for a `ws://host:port/...` URL.
pub fn http_base(ws_url: &str) -> anyhow::Result<String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .with_context(|| format!("{ws_url}: expected ws://"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(format!("http://{host}"))
}

/// `GET /api/v1/teams/{team}/presence` with `token`.
pub async fn presence(
    http: &reqwest::Client,
    base: &str,
    team: &str,
    token: &str,
) -> anyhow::Result<PresenceResponse> {
    let resp = http
        .get(format!("{base}/api/v1/teams/{team}/presence"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET presence of {team}"))?;
    if !resp.status().is_success() {
        bail!(
            "GET presence of {team}: HTTP {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp.json().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases() {
        assert_eq!(
            http_base("ws://127.0.0.1:8080/ws").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(http_base("wss://x/ws").is_err());
    }
}

//! `GET /api/v1/openapi.json`: the document is served, and every operation it lists is
//! routed by the node (asked without a token, each answers 401, not 404).

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn document_is_served_and_matches_the_router() {
    let hub = TestHub::start().await;
    let resp = reqwest::get(hub.http("/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 4, "{paths:?}");
    let client = reqwest::Client::new();
    let mut operations = 0;
    for (path, item) in paths {
        // Every path parameter is an id of the contract's alphabet.
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let req = client.request(method.to_uppercase().parse().unwrap(), hub.http(&concrete));
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
            assert!(
                item[method]["responses"]["401"].is_object(),
                "{method} {path} does not document its 401"
            );
        }
    }
    assert!(operations >= 4);
}

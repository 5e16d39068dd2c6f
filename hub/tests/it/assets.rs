//! The demo page and the browser library are served from the binary itself.

use crate::harness::*;

#[tokio::test]
async fn the_page_and_the_library_are_served_with_their_types() {
    let hub = TestHub::start().await;
    for (path, content_type, needle) in [
        ("/", "text/html", "<script type=\"module\" src=\"/app.js\">"),
        ("/app.js", "text/javascript", "from \"/teamhub.js\""),
        ("/app.css", "text/css", "#presence"),
        (
            "/teamhub.js",
            "text/javascript",
            "export class TeamhubClient",
        ),
        (
            "/teamhub.d.ts",
            "application/typescript",
            "export declare class TeamhubClient",
        ),
    ] {
        let response = reqwest::get(hub.http(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let got = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(got.starts_with(content_type), "{path}: {got}");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle:?}");
        // Nothing is fetched from outside the node.
        assert!(!body.contains("https://"), "{path} refers to another site");
    }
}

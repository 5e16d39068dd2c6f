//! The demo page and the browser client library, embedded in the binary.
//!
//! The files live in `clients/browser/` (the library a web app imports, and the demo
//! page built on it) and are compiled in with `include_str!`, so a node serves them
//! with no files beside it and the page makes no request outside the node.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    body: include_str!("../../../clients/browser/demo/index.html"),
    content_type: "text/html; charset=utf-8",
};
const APP_JS: Asset = Asset {
    body: include_str!("../../../clients/browser/demo/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const APP_CSS: Asset = Asset {
    body: include_str!("../../../clients/browser/demo/app.css"),
    content_type: "text/css; charset=utf-8",
};
const LIBRARY: Asset = Asset {
    body: include_str!("../../../clients/browser/teamhub.js"),
    content_type: "text/javascript; charset=utf-8",
};
const TYPES: Asset = Asset {
    body: include_str!("../../../clients/browser/teamhub.d.ts"),
    content_type: "application/typescript; charset=utf-8",
};

impl IntoResponse for &'static Asset {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                // Assets change with the binary, which has no version in these paths:
                // let browsers revalidate rather than run a stale page after an upgrade.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            self.body,
        )
            .into_response()
    }
}

/// `/`: the demo page.
pub async fn index() -> Response {
    (&INDEX).into_response()
}

pub async fn app_js() -> Response {
    (&APP_JS).into_response()
}

pub async fn app_css() -> Response {
    (&APP_CSS).into_response()
}

/// `/teamhub.js`: the browser client library, for apps that import it from the node.
pub async fn library() -> Response {
    (&LIBRARY).into_response()
}

/// `/teamhub.d.ts`: its types.
pub async fn types() -> Response {
    (&TYPES).into_response()
}

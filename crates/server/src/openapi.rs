//! The OpenAPI document of the service, generated from the handlers and types.

use crate::api::{conversations, system, tools, turns};
use crate::openai::{chat, models, readback, responses};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "codex-pool", description = "Many Codex conversations at once, on a pool of `codex app-server` processes."),
    paths(
        conversations::create, conversations::list, conversations::get_one, conversations::items,
        conversations::delete, conversations::release, conversations::interrupt,
        turns::start, turns::events, turns::compact, tools::submit_outputs,
        system::healthz, system::readyz, system::pool, system::nodes, system::openapi, system::metrics,
        responses::create, readback::retrieve, chat::create, models::list, models::retrieve,
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
struct ApiDoc;

/// The bearer token, when the service has one.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::keys::admin::KeysDoc::openapi());
    doc
}

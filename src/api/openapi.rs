//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokenvault",
        description = "HSM-backed tokenization and encryption vault. \
        Every call needs a client certificate from the configured CA (mutual TLS 1.3)."
    ),
    paths(
        super::tokens::tokenize,
        super::tokens::tokenize_batch,
        super::tokens::detokenize,
        super::tokens::detokenize_batch,
        super::tokens::token_info,
        super::tokens::delete_token,
        super::crypto::encrypt,
        super::crypto::decrypt,
        super::crypto::rewrap,
        super::keys::list,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        openapi_json,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail))
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

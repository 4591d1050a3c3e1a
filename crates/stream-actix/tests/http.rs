//! What is this adapter's own, in process: stream-core's web adapter suite run through
//! [`SseError`]'s `ResponseError` (http 1 status and headers from stream-core into actix's
//! http 0.2 types) and the [`LastEventId`] extractor. The HTTP behaviour shared with stream-axum
//! runs over a real socket against both adapters in `integration-tests/tests/adapters.rs`.

use actix_web::body::{MessageBody, to_bytes};
use actix_web::http::header::HeaderValue;
use actix_web::test::TestRequest;
use actix_web::{FromRequest, HttpResponse, ResponseError};
use stream_actix::{LastEventId, SseError};
use stream_core::conformance::adapter::{self, Answer};
use stream_core::sse::StreamError;

/// Reads a response back as plain data.
async fn answer<B: MessageBody>(response: HttpResponse<B>) -> Answer {
    Answer {
        status: response.status().as_u16(),
        headers: (response.headers().iter())
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect(),
        body: match to_bytes(response.into_body()).await {
            Ok(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            Err(_) => panic!("the body could not be read"),
        },
    }
}

#[actix_web::test]
async fn errors_and_the_last_event_id_extractor_conform() {
    let respond = async |error: StreamError| {
        let error = SseError::from(error);
        assert_eq!(error.status_code().as_u16(), error.0.status());
        answer(error.error_response()).await
    };
    let read = async |header: Option<&[u8]>, uri: &str| {
        let request = match header {
            Some(value) => TestRequest::get().insert_header(("Last-Event-ID", HeaderValue::from_bytes(value).unwrap())),
            None => TestRequest::get(),
        };
        let request = request.uri(uri).to_http_request();
        // The extractor and the plain function read alike.
        let direct = LastEventId::from_request_head(&request).map_err(|e| e.to_string());
        match LastEventId::extract(&request).await {
            Ok(LastEventId(id)) => {
                assert_eq!(direct, Ok(LastEventId(id)));
                Ok(id)
            }
            Err(rejection) => {
                assert_eq!(direct, Err(rejection.to_string()));
                Err(answer(rejection.error_response()).await)
            }
        }
    };
    adapter::run(respond, read).await;
}

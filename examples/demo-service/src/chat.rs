//! The fake LLM behind `POST /chat/stream`.

use std::convert::Infallible;
use std::time::Duration;

use futures_core::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use stream_core::{ChannelId, Event, EventType};

/// The body of `POST /chat/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChatRequest {
    /// What the user asked.
    pub prompt: String,
}

/// The reply's tokens: whitespace-separated words, each but the first with its leading space,
/// so that joining them gives the reply.
pub fn reply_tokens(prompt: &str) -> Vec<String> {
    let prompt: String = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let reply = format!(
        "You asked: \"{prompt}\". This demo streams its answer one token at a time over \
         Server-Sent Events, under your stream lease."
    );
    reply
        .split(' ')
        .enumerate()
        .map(|(i, word)| if i == 0 { word.to_owned() } else { format!(" {word}") })
        .collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The direct event stream of a chat reply: one `data` event `{"token": …}` per token, `delay`
/// apart, then `done` with `{"success": true}`. It makes its events itself (nothing is
/// published), on a fresh channel id.
pub fn chat_events(
    prompt: &str,
    delay: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<> {
    let channel = ChannelId::generate();
    let mut events: Vec<Event> = reply_tokens(prompt)
        .into_iter()
        .map(|token| {
            Event::new(channel.clone(), EventType::Data, object(json!({"token": token})))
                .expect("token payloads use no reserved key")
        })
        .collect();
    events.push(Event::new(channel, EventType::Done, object(json!({"success": true}))).expect("no reserved key"));
    // Ids are made now, in order; the delay only paces delivery.
    futures_util::stream::unfold(events.into_iter(), move |mut rest| async move {
        let event = rest.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok(event), rest))
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn tokens_then_done() {
        let events: Vec<Event> = chat_events("hi  there", Duration::ZERO)
            .map(|e| e.unwrap())
            .collect()
            .await;
        let (last, tokens) = events.split_last().unwrap();
        assert_eq!(last.kind, EventType::Done);
        let text: String = tokens.iter().map(|e| e.payload["token"].as_str().unwrap()).collect();
        assert!(text.starts_with("You asked: \"hi there\"."), "{text}");
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    }
}

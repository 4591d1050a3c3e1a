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

/// The reply to `prompt` (its whitespace runs made single spaces).
fn reply_text(prompt: &str) -> String {
    let mut asked = String::with_capacity(prompt.len());
    for word in prompt.split_whitespace() {
        if !asked.is_empty() {
            asked.push(' ');
        }
        asked.push_str(word);
    }
    format!(
        "You asked: \"{asked}\". This demo streams its answer one token at a time over \
         Server-Sent Events, under your stream lease."
    )
}

/// The reply's tokens, one at a time: the reply split at each space, each token but the first
/// with its leading space, so that joining them gives the reply.
#[derive(Debug)]
struct Tokens {
    reply: String,
    next: usize,
}

impl Iterator for Tokens {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let start = self.next;
        if start >= self.reply.len() {
            return None;
        }
        // A token after the first starts at its space; it ends before the next one.
        let from = if start == 0 { 0 } else { start + 1 };
        let end = self.reply[from..].find(' ').map_or(self.reply.len(), |i| from + i);
        self.next = end;
        Some(self.reply[start..end].to_owned())
    }
}

/// The reply's tokens: whitespace-separated words, each but the first with its leading space,
/// so that joining them gives the reply.
pub fn reply_tokens(prompt: &str) -> Vec<String> {
    tokens(prompt).collect()
}

fn tokens(prompt: &str) -> Tokens {
    Tokens {
        reply: reply_text(prompt),
        next: 0,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The direct event stream of a chat reply: one `data` event `{"token": …}` per token, `delay`
/// apart, then `done` with `{"success": true}`. It makes its events itself (nothing is
/// published), on a fresh channel id, one at a time as the stream is polled: nothing is built
/// ahead of the client.
pub fn chat_events(
    prompt: &str,
    delay: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<> {
    chat_events_holding(ChannelId::generate(), prompt, delay, ())
}

/// [`chat_events`] on `channel`, holding `held` until `done` is made (or the stream is dropped, a
/// client that went away): the channel's slot under the per-user cap.
pub(crate) fn chat_events_holding<H: Send + 'static>(
    channel: ChannelId,
    prompt: &str,
    delay: Duration,
    held: H,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<H> {
    struct State<H> {
        channel: ChannelId,
        tokens: Tokens,
        /// Dropped once `done` is made; `None` after.
        held: Option<H>,
    }
    let state = State {
        channel,
        tokens: tokens(prompt),
        held: Some(held),
    };
    futures_util::stream::unfold(state, move |mut state| async move {
        state.held.as_ref()?;
        // Each event is made when its turn comes (ids in order): the delay only paces delivery.
        tokio::time::sleep(delay).await;
        let event = match state.tokens.next() {
            Some(token) => Event::new(state.channel.clone(), EventType::Data, object(json!({"token": token})))
                .expect("token payloads use no reserved key"),
            None => {
                state.held = None;
                Event::new(state.channel.clone(), EventType::Done, object(json!({"success": true})))
                    .expect("no reserved key")
            }
        };
        Some((Ok(event), state))
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
        assert!(events.iter().all(|e| e.channel_id == last.channel_id));
        assert_eq!(text, reply_text("hi there"));
        assert_eq!(tokens.len(), reply_tokens("hi  there").len());
    }

    #[test]
    fn tokens_split_like_the_reply_at_each_space() {
        for prompt in ["", "one", "  a   b  ", "x\ty\nz"] {
            let reply = reply_text(prompt);
            let expected: Vec<String> = reply
                .split(' ')
                .enumerate()
                .map(|(i, w)| if i == 0 { w.to_owned() } else { format!(" {w}") })
                .collect();
            assert_eq!(reply_tokens(prompt), expected, "{prompt:?}");
            assert_eq!(reply_tokens(prompt).concat(), reply);
        }
    }

    #[tokio::test]
    async fn events_are_made_as_they_are_polled_and_the_held_value_goes_with_done() {
        use std::sync::Arc;
        let held = Arc::new(());
        let mut events = std::pin::pin!(chat_events_holding(
            ChannelId::generate(),
            "a b",
            Duration::ZERO,
            held.clone()
        ));
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.payload["token"], "You");
        assert_eq!(Arc::strong_count(&held), 2, "held while tokens remain");
        let rest: Vec<Event> = events.by_ref().map(|e| e.unwrap()).collect().await;
        assert_eq!(rest.last().unwrap().kind, EventType::Done);
        assert_eq!(Arc::strong_count(&held), 1, "released with done");
        // A stream dropped early drops what it holds.
        let early = chat_events_holding(ChannelId::generate(), "a", Duration::ZERO, held.clone());
        assert_eq!(Arc::strong_count(&held), 2);
        drop(early);
        assert_eq!(Arc::strong_count(&held), 1);
    }
}

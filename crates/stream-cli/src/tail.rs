//! `tail <channel>`: a channel's events as they come, through the broker's own subscription (the
//! replay every SSE stream gets: ordered, no duplicates, `gap` notices, the producer watch).

use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};

use stream_core::{EventSubscriber, EventType, SharedEvent, SubscribeError, Subscription};

use crate::cli::TailArgs;
use crate::error::{CliError, chain};
use crate::output::Out;
use crate::settings;

/// Follows the channel until its `done` (printed, exit 0), Ctrl-C or SIGTERM (exit 0), or a
/// failure (exit 1).
pub(crate) async fn run(args: TailArgs, out: &mut Out) -> Result<ExitCode, CliError> {
    let broker = settings::broker().await?;
    let channel = args.channel;
    // Without a starting point the subscription starts at the beginning of the history; a live
    // tail passes over what it already holds (below).
    let after = args.last_event_id;
    let mut sub = broker
        .subscribe(&channel, after)
        .await
        .map_err(|e| CliError::Failed(format!("cannot subscribe to {channel}: {}", chain(&e))))?;
    if sub.is_finished() {
        eprintln!(
            "stream-cli: channel {channel} ended at or before {}: nothing follows it",
            after.map(|id| id.to_string()).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.from_start || after.is_some() {
        let from = after.map_or_else(|| "its start".to_owned(), |id| format!("after {id}"));
        eprintln!("stream-cli: following channel {channel} from {from} (Ctrl-C to stop)");
    } else {
        let (skipped, ended) = skip_history(&mut sub)?;
        if let Some(done) = ended {
            eprintln!(
                "stream-cli: channel {channel} has already ended; its done event follows (--from-start shows its \
                 history)"
            );
            out.event(done.event())?;
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "stream-cli: following channel {channel} live, {skipped} earlier event(s) not shown (--from-start \
             shows them; Ctrl-C to stop)"
        );
    }
    let stop = worker::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            next = sub.next_shared() => next,
            () = &mut stop => {
                eprintln!("stream-cli: stopped");
                return Ok(ExitCode::SUCCESS);
            }
        };
        match next {
            Some(Ok(event)) => {
                out.event(event.event())?;
                if *event.kind() == EventType::Done {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(Err(e)) => return Err(failed(&channel, &e)),
            None => {
                return Err(CliError::Failed(format!(
                    "the subscription to {channel} ended before its done event (the broker shut down)"
                )));
            }
        }
    }
}

fn failed(channel: &stream_core::ChannelId, e: &SubscribeError) -> CliError {
    CliError::Failed(format!("following {channel}: {}", chain(e)))
}

/// Passes over what a subscription from the start of the channel yields at once: the history the
/// broker read when it opened (held in the subscription), and any live event that came before this
/// call. What comes after is live. Returns how many events it passed over, and the channel's
/// `done` when the history holds it (the subscription has then ended).
fn skip_history(sub: &mut Subscription) -> Result<(usize, Option<SharedEvent>), CliError> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut skipped = 0;
    loop {
        match Pin::new(&mut *sub).poll_next_shared(&mut cx) {
            Poll::Ready(Some(Ok(event))) => {
                if *event.kind() == EventType::Done {
                    return Ok((skipped, Some(event)));
                }
                if !event.kind().is_control() {
                    skipped += 1;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                return Err(CliError::Failed(format!("reading the history: {}", chain(&e))));
            }
            Poll::Ready(None) => return Ok((skipped, None)),
            Poll::Pending => return Ok((skipped, None)),
        }
    }
}

//! `nats-echo-worker`: the NATS twin of spillway's Rust echo worker
//! (`engine/examples/workers/echo_worker.rs`), for `workers-vs-nats`. It joins a queue
//! group on a subject and answers each request with its payload, the same answer the echo
//! worker gives each Work (`payload.clone()`), on one thread (a current-thread runtime, as
//! the echo worker is one blocking thread); only the transport differs. SIGINT and SIGTERM
//! stop it after the request in hand, and it exits 0.
//!
//! ```text
//! nats-echo-worker --url nats://127.0.0.1:4222 [--subject echo] [--queue workers] [--name N]
//! ```

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use spillway::message::Bytes;
use tokio::signal::unix::{signal, SignalKind};

/// The command line.
#[derive(Parser)]
#[command(about = "A NATS queue-group worker that answers each request with its payload")]
struct Options {
    /// nats-server's URL.
    #[arg(long)]
    url: String,
    /// The subject requests come on.
    #[arg(long, default_value = "echo")]
    subject: String,
    /// The queue group: nats-server hands each request to one member.
    #[arg(long, default_value = "workers")]
    queue: String,
    /// The connection's name, shown in nats-server's monitoring and in this worker's lines.
    #[arg(long, default_value = "nats-echo")]
    name: String,
}

/// The echo worker's answer, as `echo_worker.rs` gives it.
fn answer(payload: &Bytes) -> Bytes {
    payload.clone()
}

async fn serve(options: Options) -> anyhow::Result<ExitCode> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM")?;
    let client = async_nats::ConnectOptions::new()
        .name(options.name.as_str())
        .connect(options.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", options.url))?;
    let mut requests = client
        .queue_subscribe(options.subject.clone(), options.queue.clone())
        .await
        .context("subscribing")?;
    // The subscription is on the server once a flush returns: requests sent after the line
    // below find this worker.
    client.flush().await.context("flushing the subscription")?;
    eprintln!(
        "{}: answering {} in queue group {} at {}",
        options.name, options.subject, options.queue, options.url
    );
    let mut answered: u64 = 0;
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(request) = request else {
                    bail!("nats-server ended the subscription (answered {answered})");
                };
                let Some(reply) = request.reply else {
                    // A publish without a reply subject is nobody's request.
                    continue;
                };
                client
                    .publish(reply, answer(&request.payload))
                    .await
                    .context("publishing an answer")?;
                answered += 1;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    client.flush().await.context("flushing the last answers")?;
    eprintln!(
        "{}: stopped by a signal (answered {answered})",
        options.name
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(serve(options))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Options::command().debug_assert();
    }
}

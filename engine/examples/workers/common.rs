//! What the Rust reference workers share: the command line every worker takes and the
//! conversation of docs/WORKERS.md section 3, on a blocking socket, with the codec of
//! `spillway::workers::protocol`. A worker is this loop and a function from a Work to its
//! answer.
//!
//! No reconnection: when Spillway goes away the worker stops with an error, unless
//! Spillway said it is shutting down (then it exits 0). SIGINT and SIGTERM stop it between
//! two frames, after it has answered every Work it read.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use spillway::message::Bytes;
use spillway::workers::protocol::{
    AnswerStatus, DispatchFrame, FrameReader, FromDispatcher, Work, WorkerErrorCode, WorkerFrame,
};

/// The largest frame Spillway may announce (`[workers] max_frame_bytes` is at most 16 MiB):
/// the reader's limit before the Welcome says the real one.
const FRAME_BYTES_MAX: u32 = 16 << 20;
/// How often a blocked read wakes to look for SIGINT/SIGTERM.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The flags every worker takes.
#[derive(clap::Args)]
pub struct Connect {
    /// Spillway's worker address: `HOST:PORT` or `unix:PATH` (`spillway serve --workers`).
    #[arg(long)]
    pub connect: String,
    /// The name Spillway shows in its logs, 1 to 64 bytes.
    #[arg(long, default_value = "worker")]
    pub name: String,
    /// How many Works this worker may hold at once, 1 to 65,536.
    #[arg(long, default_value_t = 16)]
    pub credit: u32,
}

/// A socket of either kind.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(address: &str) -> io::Result<Box<dyn Stream>> {
    Ok(match address.strip_prefix("unix:") {
        Some(path) => {
            let stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(SIGNAL_CHECK_INTERVAL))?;
            Box::new(stream)
        }
        None => {
            let stream = TcpStream::connect(address)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(SIGNAL_CHECK_INTERVAL))?;
            Box::new(stream)
        }
    })
}

/// Connects, says Hello, and answers every Work with `serve` until Spillway closes the
/// connection or a signal comes.
pub fn run(
    options: &Connect,
    mut serve: impl FnMut(&Work) -> (AnswerStatus, Bytes),
) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut stream =
        connect(&options.connect).with_context(|| format!("connecting to {}", options.connect))?;
    let mut out = Vec::new();
    WorkerFrame::Hello {
        credit: options.credit,
        name: options.name.clone(),
    }
    .encode(&mut out);
    stream.write_all(&out)?;

    let mut reader = FrameReader::<FromDispatcher>::new(FRAME_BYTES_MAX);
    let mut buffer = vec![0; 64 * 1024];
    let mut answered: u64 = 0;
    // Relaxed: the flag carries no data; the signal handler only sets it.
    while !stop.load(Ordering::Relaxed) {
        let count = match stream.read(&mut buffer) {
            Ok(0) => bail!("spillway closed the connection (answered {answered})"),
            Ok(count) => count,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(error) => return Err(error).context("reading from spillway"),
        };
        reader.feed(&buffer[..count]);
        out.clear();
        while let Some(frame) = reader.next_frame().context("a frame from spillway")? {
            match frame {
                DispatchFrame::Welcome {
                    worker_id,
                    answer_timeout_ns,
                    max_frame_bytes,
                } => eprintln!(
                    "{}: worker {worker_id:#x} of spillway at {} (answer within {} ms, frames up to {max_frame_bytes} B)",
                    options.name,
                    options.connect,
                    answer_timeout_ns / 1_000_000
                ),
                DispatchFrame::Work(work) => {
                    let (status, body) = serve(&work);
                    WorkerFrame::Answer {
                        work_id: work.work_id,
                        status,
                        body,
                    }
                    .encode(&mut out);
                    answered += 1;
                }
                DispatchFrame::Pong { .. } => {}
                DispatchFrame::Error {
                    code: WorkerErrorCode::ShuttingDown,
                    ..
                } => {
                    eprintln!("{}: spillway is shutting down (answered {answered})", options.name);
                    return Ok(ExitCode::SUCCESS);
                }
                DispatchFrame::Error { code, detail } => {
                    bail!("spillway cut this worker: {} ({detail})", code.name())
                }
            }
        }
        // One write for every answer of this read.
        stream.write_all(&out).context("writing answers")?;
    }
    eprintln!(
        "{}: stopped by a signal (answered {answered})",
        options.name
    );
    Ok(ExitCode::SUCCESS)
}

//! `docs/WORKERS.md` against the code: every worked example decodes and re-encodes to
//! exactly its bytes, and the page's error-code table is the code's.

use spillway::workers::protocol::{
    DispatchFrame, FrameReader, FromDispatcher, FromWorker, WorkerErrorCode, WorkerFrame,
    WORKER_MAGIC,
};
use spillway_tests::example_bytes;

const WORKERS_PAGE: &str = include_str!("../../docs/WORKERS.md");

#[test]
fn the_worked_examples_decode_and_re_encode_to_themselves() {
    let examples: Vec<Vec<u8>> = WORKERS_PAGE
        .lines()
        .filter(|line| line.starts_with("53 4b "))
        .map(example_bytes)
        .collect();
    assert_eq!(examples.len(), 7, "the page has seven worked examples");
    for example in examples {
        assert_eq!(example[..2], WORKER_MAGIC);
        let mut re_encoded = Vec::new();
        if example[3] < 0x80 {
            let mut reader = FrameReader::<FromWorker>::new(1 << 17);
            reader.feed(&example);
            let frame: WorkerFrame = reader.next_frame().unwrap().expect("a whole frame");
            frame.encode(&mut re_encoded);
        } else {
            let mut reader = FrameReader::<FromDispatcher>::new(1 << 17);
            reader.feed(&example);
            let frame: DispatchFrame = reader.next_frame().unwrap().expect("a whole frame");
            frame.encode(&mut re_encoded);
        }
        assert_eq!(re_encoded, example);
    }
}

#[test]
fn the_error_code_table_is_the_codes() {
    for code in WorkerErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.code(), code.name());
        assert!(WORKERS_PAGE.contains(&row), "missing row {row}");
    }
}

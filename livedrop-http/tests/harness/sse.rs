//! Server-sent events as the tests read them; also included on its own (with
//! `#[path]`) by the tests that need no services.

use serde_json::Value;

/// Takes the next whole frame that carries data off the front of `buffer`: its
/// event name and its JSON data. `None` until such a frame has arrived; frames
/// without data (comments, keep-alives) are dropped.
pub fn take_frame(buffer: &mut String) -> Option<(String, Value)> {
    while let Some(end) = buffer.find("\n\n") {
        let frame: String = buffer.drain(..end + 2).collect();
        let mut name = String::new();
        let mut data = String::new();
        for line in frame.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !data.is_empty() {
            return Some((name, serde_json::from_str(&data).unwrap()));
        }
    }
    None
}

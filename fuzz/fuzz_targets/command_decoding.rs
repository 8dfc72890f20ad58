//! Fuzzes what the consumer does with a message body before any I/O:
//! envelope parsing, command decoding, reply-id salvage. Any input must end
//! in a value or a refusal with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use user_lifecycle::domain::command::{Command, CommandType};
use user_lifecycle::domain::envelope;

fuzz_target!(|body: &[u8]| {
    let _ = envelope::salvage_id(body);
    match envelope::parse(body) {
        Ok(env) => {
            if let Err(e) = Command::parse(env.kind, &env.data) {
                assert!(!e.message.is_empty());
            }
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }
    // The same bytes as the data of every command type.
    if let Ok(data) = serde_json::from_slice::<serde_json::Value>(body) {
        for kind in CommandType::ALL {
            let _ = Command::parse(*kind, &data);
        }
    }
});

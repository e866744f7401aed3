//! Arbitrary bytes into `wuos_proto::validate::decode_frame`: it must return, never panic, and
//! whatever it accepts must re-encode to a message that it accepts again, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wuos_proto::validate::decode_frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_frame(data) {
        let again = decode_frame(&m.encode_to_vec()).expect("a message that passed validation passes again");
        assert!(again == m, "re-encoding changed the message");
    }
});

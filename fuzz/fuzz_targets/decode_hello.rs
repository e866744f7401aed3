//! Arbitrary bytes into `wuos_proto::validate::decode_hello`: it must return, never panic, and
//! whatever it accepts must re-encode to a message that it accepts again, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wuos_proto::validate::decode_hello;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_hello(data) {
        let again = decode_hello(&m.encode_to_vec()).expect("a message that passed validation passes again");
        assert!(again == m, "re-encoding changed the message");
    }
});

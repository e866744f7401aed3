//! Arbitrary text into `wuos_policy::Policy::parse`: it must return, never panic, and a policy it
//! accepts must print (canonical form) to text that parses back and prints the same (positions
//! in the source differ, so the canonical texts are compared).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wuos_policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = Policy::parse(text) {
        let canonical = p.to_string();
        let again = Policy::parse(&canonical).expect("the canonical form parses");
        assert_eq!(again.to_string(), canonical, "printing and parsing again changed the policy");
    }
});

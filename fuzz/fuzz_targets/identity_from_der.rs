//! Arbitrary bytes into `wuos_pki::Identity::from_der` (what a TLS verifier reads from a peer's
//! certificate): it must return, never panic, and an identity it accepts names a valid router id.
//! Seed: `fuzz/seeds/identity_from_der/router.der`, a certificate `wuos pki issue` made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wuos_pki::Identity;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = Identity::from_der(data) {
        assert!(wuos_model::RouterId::new(id.router.as_str()).is_ok(), "an accepted id is valid");
        assert!(!id.serial.is_empty(), "an accepted certificate has a serial");
    }
});

//! `domain-init` as a stand-alone binary, for the privileged tests (the daemon exposes the same
//! function as `wuosd domain-init`). Usage: see `wuos_southbound::domain::init`.

fn main() {
    wuos_southbound::domain::init::main_from_args()
}

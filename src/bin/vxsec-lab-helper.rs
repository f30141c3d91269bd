//! Traffic helper that `vxsec lab` and the netns tests start inside network
//! namespaces (TCP transfer with SHA-256, sequenced UDP stream); see
//! `vxsec::agent::lab::traffic`. It is not meant to be run by hand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(vxsec::agent::lab::traffic::helper_main(&args));
}

//! Traffic helper that `vxsec-lab` and the netns tests start inside network
//! namespaces (TCP transfer with SHA-256, sequenced UDP stream, guard and
//! handshake-flood modes); see `vxsec_lab::traffic`. It is not meant to be
//! run by hand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(vxsec_lab::traffic::helper_main(&args));
}

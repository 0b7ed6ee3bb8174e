//! `flashkv`, the daemon binary: for now it opens a data directory, reports
//! what recovery found and exits (the network front-ends come next).

fn main() {
    eprintln!("flashkv: the daemon's network interfaces are not built yet");
    std::process::exit(2);
}

//! Fuzz target: decoding of every gRPC request message (prost) and the
//! checks the KV service runs on it before touching storage.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flashkv::api::grpc::fuzzing::decode_requests(data);
});

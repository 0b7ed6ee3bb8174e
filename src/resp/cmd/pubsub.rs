//! `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT |
//! SHARDCHANNELS [pattern] | SHARDNUMSUB [shardchannel ...] | HELP`: the
//! channels with subscribers, subscriber counts, patterns subscribed.

use crate::resp::proto::Reply;
use crate::resp::pubsub::Kind;
use crate::resp::{subcommand_arity, unknown_subcommand};

const HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
];

command!(
    "pubsub",
    -2,
    ["pubsub", "loading", "stale"],
    (0, 0, 0),
    |cx, a| {
        let hub = &cx.shared.server.pubsub;
        let names = |kind: Kind| {
            Reply::Array(
                hub.active(kind, a.get(2).map(Vec::as_slice))
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            )
        };
        let counts = |kind: Kind| {
            Reply::Array(
                a[2..]
                    .iter()
                    .flat_map(|c| {
                        [
                            Reply::Bulk(c.clone()),
                            Reply::Int(hub.count(kind, c) as i64),
                        ]
                    })
                    .collect(),
            )
        };
        match a[1].to_ascii_uppercase().as_slice() {
            b"CHANNELS" if a.len() <= 3 => Ok(names(Kind::Channel)),
            b"SHARDCHANNELS" if a.len() <= 3 => Ok(names(Kind::Shard)),
            b"NUMSUB" => Ok(counts(Kind::Channel)),
            b"SHARDNUMSUB" => Ok(counts(Kind::Shard)),
            b"NUMPAT" if a.len() == 2 => Ok(Reply::Int(hub.patterns() as i64)),
            b"HELP" if a.len() == 2 => Ok(Reply::Array(
                HELP.iter()
                    .map(|l| Reply::Status((*l).to_string()))
                    .collect(),
            )),
            // (Redis' own words for these.)
            b"CHANNELS" | b"SHARDCHANNELS" => Err(Reply::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&a[1])
            ))),
            b"NUMPAT" | b"HELP" => Err(subcommand_arity("pubsub", &a[1])),
            _ => Err(unknown_subcommand("PUBSUB", &a[1])),
        }
    }
);

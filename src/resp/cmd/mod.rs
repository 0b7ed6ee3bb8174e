//! The commands, one per file, and their table. Each file declares its
//! command with `command!`: name, arity (Redis convention: N exact, -N at
//! least N, the name counted), flags and key positions (for COMMAND INFO),
//! and the body, which returns `Result<Reply, Reply>` so that `?` on an
//! error reply answers with it. Helpers shared by several commands are in
//! [`common`].

use std::sync::LazyLock;

use futures::future::BoxFuture;

use crate::resp::Conn;
use crate::resp::proto::Reply;

/// A command's entry in the table.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: N = exactly N arguments, -N = at least N (name included).
    pub arity: i32,
    /// Redis command flags, for COMMAND INFO.
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step; 0,0,0 for none.
    pub keys: (i32, i32, i32),
    /// Runs the command.
    pub run: for<'a> fn(&'a mut Conn, &'a [Vec<u8>]) -> BoxFuture<'a, Reply>,
}

/// Declares the command of a file as `SPEC`.
macro_rules! command {
    ($name:literal, $arity:expr, [$($flag:literal),*], ($f:expr, $l:expr, $s:expr),
     |$cx:ident, $a:ident| $body:block) => {
        /// This file's command.
        pub static SPEC: $crate::resp::cmd::Spec = $crate::resp::cmd::Spec {
            name: $name,
            arity: $arity,
            flags: &[$($flag),*],
            keys: ($f, $l, $s),
            run,
        };

        fn run<'a>(
            cx: &'a mut $crate::resp::Conn,
            args: &'a [Vec<u8>],
        ) -> futures::future::BoxFuture<'a, $crate::resp::proto::Reply> {
            #[allow(unused_variables, unused_mut)]
            async fn body(
                $cx: &mut $crate::resp::Conn,
                $a: &[Vec<u8>],
            ) -> Result<$crate::resp::proto::Reply, $crate::resp::proto::Reply> $body
            Box::pin(async move { body(cx, args).await.unwrap_or_else(|e| e) })
        }
    };
}

pub mod common;
pub mod lists;
pub mod sets;
pub mod zsets;

// Connection and server.
mod auth;
mod client;
mod command;
mod config;
mod dbsize;
mod echo;
mod hello;
mod info;
mod ping;
mod quit;
mod reset;
mod slowlog;
// Pub/sub.
mod psubscribe;
mod publish;
mod pubsub;
mod punsubscribe;
mod spublish;
mod ssubscribe;
mod subscribe;
mod sunsubscribe;
mod unsubscribe;
// transactions
mod discard;
mod exec;
mod multi;
mod select;
mod time;
mod unwatch;
mod watch;
// Keys.
mod del;
mod exists;
mod expire;
mod expireat;
mod expiretime;
mod flushall;
mod flushdb;
mod keys;
mod persist;
mod pexpire;
mod pexpireat;
mod pexpiretime;
mod pttl;
mod randomkey;
mod rename;
mod renamenx;
mod scan;
mod ttl;
mod r#type;
mod unlink;
// Strings.
mod append;
mod decr;
mod decrby;
mod get;
mod getdel;
mod getex;
pub(crate) mod getrange;
mod getset;
mod incr;
mod incrby;
mod incrbyfloat;
mod mget;
mod mset;
mod msetnx;
mod psetex;
mod set;
mod setex;
mod setnx;
mod setrange;
mod strlen;
mod substr;
// Hashes.
mod hdel;
mod hexists;
mod hget;
mod hgetall;
mod hincrby;
mod hincrbyfloat;
mod hkeys;
mod hlen;
mod hmget;
mod hmset;
mod hrandfield;
mod hscan;
mod hset;
mod hsetnx;
mod hstrlen;
mod hvals;
// Lists.
mod blmove;
mod blmpop;
mod blpop;
mod brpop;
mod brpoplpush;
mod lindex;
mod linsert;
mod llen;
mod lmove;
mod lmpop;
mod lpop;
mod lpos;
mod lpush;
mod lpushx;
mod lrange;
mod lrem;
mod lset;
mod ltrim;
mod rpop;
mod rpoplpush;
mod rpush;
mod rpushx;
// Sets.
mod sadd;
mod scard;
mod sdiff;
mod sdiffstore;
mod sinter;
mod sintercard;
mod sinterstore;
mod sismember;
mod smembers;
mod smismember;
mod smove;
mod spop;
mod srandmember;
mod srem;
mod sscan;
mod sunion;
mod sunionstore;
// Sorted sets.
mod bzmpop;
mod bzpopmax;
mod bzpopmin;
mod zadd;
mod zcard;
mod zcount;
mod zincrby;
mod zinterstore;
mod zlexcount;
mod zmpop;
mod zmscore;
mod zpopmax;
mod zpopmin;
mod zrange;
mod zrangebylex;
mod zrangebyscore;
mod zrank;
mod zrem;
mod zremrangebyrank;
mod zremrangebyscore;
mod zrevrange;
mod zrevrangebylex;
mod zrevrangebyscore;
mod zrevrank;
mod zscan;
mod zscore;
mod zunionstore;

/// Every command.
pub static COMMANDS: &[&Spec] = &[
    &auth::SPEC,
    &client::SPEC,
    &command::SPEC,
    &config::SPEC,
    &dbsize::SPEC,
    &echo::SPEC,
    &hello::SPEC,
    &info::SPEC,
    &ping::SPEC,
    &quit::SPEC,
    &reset::SPEC,
    &slowlog::SPEC,
    &subscribe::SPEC,
    &unsubscribe::SPEC,
    &psubscribe::SPEC,
    &punsubscribe::SPEC,
    &ssubscribe::SPEC,
    &sunsubscribe::SPEC,
    &publish::SPEC,
    &spublish::SPEC,
    &pubsub::SPEC,
    &multi::SPEC,
    &exec::SPEC,
    &discard::SPEC,
    &watch::SPEC,
    &unwatch::SPEC,
    &select::SPEC,
    &time::SPEC,
    &del::SPEC,
    &exists::SPEC,
    &expire::SPEC,
    &expireat::SPEC,
    &expiretime::SPEC,
    &flushall::SPEC,
    &flushdb::SPEC,
    &keys::SPEC,
    &persist::SPEC,
    &pexpire::SPEC,
    &pexpireat::SPEC,
    &pexpiretime::SPEC,
    &pttl::SPEC,
    &randomkey::SPEC,
    &rename::SPEC,
    &renamenx::SPEC,
    &scan::SPEC,
    &ttl::SPEC,
    &r#type::SPEC,
    &unlink::SPEC,
    &append::SPEC,
    &decr::SPEC,
    &decrby::SPEC,
    &get::SPEC,
    &getdel::SPEC,
    &getex::SPEC,
    &getrange::SPEC,
    &getset::SPEC,
    &incr::SPEC,
    &incrby::SPEC,
    &incrbyfloat::SPEC,
    &mget::SPEC,
    &mset::SPEC,
    &msetnx::SPEC,
    &psetex::SPEC,
    &set::SPEC,
    &setex::SPEC,
    &setnx::SPEC,
    &setrange::SPEC,
    &strlen::SPEC,
    &substr::SPEC,
    &hset::SPEC,
    &hsetnx::SPEC,
    &hget::SPEC,
    &hmget::SPEC,
    &hmset::SPEC,
    &hdel::SPEC,
    &hlen::SPEC,
    &hexists::SPEC,
    &hgetall::SPEC,
    &hkeys::SPEC,
    &hvals::SPEC,
    &hincrby::SPEC,
    &hincrbyfloat::SPEC,
    &hstrlen::SPEC,
    &hscan::SPEC,
    &hrandfield::SPEC,
    &lpush::SPEC,
    &rpush::SPEC,
    &lpushx::SPEC,
    &rpushx::SPEC,
    &lpop::SPEC,
    &rpop::SPEC,
    &llen::SPEC,
    &lrange::SPEC,
    &lindex::SPEC,
    &lset::SPEC,
    &linsert::SPEC,
    &lrem::SPEC,
    &ltrim::SPEC,
    &lpos::SPEC,
    &lmove::SPEC,
    &rpoplpush::SPEC,
    &blpop::SPEC,
    &brpop::SPEC,
    &blmove::SPEC,
    &brpoplpush::SPEC,
    &lmpop::SPEC,
    &blmpop::SPEC,
    &sadd::SPEC,
    &srem::SPEC,
    &smembers::SPEC,
    &sismember::SPEC,
    &smismember::SPEC,
    &scard::SPEC,
    &spop::SPEC,
    &srandmember::SPEC,
    &smove::SPEC,
    &sinter::SPEC,
    &sunion::SPEC,
    &sdiff::SPEC,
    &sinterstore::SPEC,
    &sunionstore::SPEC,
    &sdiffstore::SPEC,
    &sintercard::SPEC,
    &sscan::SPEC,
    &zadd::SPEC,
    &zrem::SPEC,
    &zscore::SPEC,
    &zmscore::SPEC,
    &zincrby::SPEC,
    &zcard::SPEC,
    &zcount::SPEC,
    &zrange::SPEC,
    &zrangebyscore::SPEC,
    &zrevrange::SPEC,
    &zrevrangebyscore::SPEC,
    &zrangebylex::SPEC,
    &zrevrangebylex::SPEC,
    &zrank::SPEC,
    &zrevrank::SPEC,
    &zpopmin::SPEC,
    &zpopmax::SPEC,
    &bzpopmin::SPEC,
    &bzpopmax::SPEC,
    &zmpop::SPEC,
    &bzmpop::SPEC,
    &zlexcount::SPEC,
    &zremrangebyscore::SPEC,
    &zremrangebyrank::SPEC,
    &zscan::SPEC,
    &zunionstore::SPEC,
    &zinterstore::SPEC,
];

static BY_NAME: LazyLock<crate::storage::fasthash::FastMap<&'static str, &'static Spec>> =
    LazyLock::new(|| COMMANDS.iter().map(|s| (s.name, *s)).collect());

/// The command named `name` (lower case).
pub fn lookup(name: &str) -> Option<&'static Spec> {
    BY_NAME.get(name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_commands_start_with_b() {
        // (resp::is_blocking looks up only names starting with B.)
        for s in COMMANDS {
            if s.flags.contains(&"blocking") {
                assert!(s.name.starts_with('b'), "{}", s.name);
            }
        }
        assert_eq!(
            COMMANDS
                .iter()
                .filter(|s| s.flags.contains(&"blocking"))
                .count(),
            8
        );
    }

    #[test]
    fn names_are_unique_lower_case_and_arities_sane() {
        assert_eq!(BY_NAME.len(), COMMANDS.len(), "duplicate command names");
        for s in COMMANDS {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            // resp::execute lower-cases names in a 32-byte buffer.
            assert!(s.name.len() <= 32, "{}", s.name);
            assert!(s.arity != 0 && s.arity.abs() >= 1, "{}", s.name);
        }
    }
}

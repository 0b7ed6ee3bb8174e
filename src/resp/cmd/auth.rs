//! `AUTH [username] password`: with `--resp-password-file`, the connection
//! must AUTH before any other command (NOAUTH otherwise); the user name, if
//! given, must be `default`. Without a password configured, AUTH answers as
//! Redis does then.

use crate::resp::proto::Reply;

command!(
    "auth",
    -2,
    ["noscript", "loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        if a.len() > 3 {
            return Err(Reply::err("syntax error"));
        }
        let Some(password) = cx.shared.password.clone() else {
            return Err(Reply::err(
                "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        };
        let user_ok = a.len() == 2 || a[1] == b"default";
        if user_ok && password.matches(a.last().expect("arity")) {
            cx.authenticated = true;
            Ok(Reply::OK)
        } else {
            Err(Reply::Error(
                "WRONGPASS invalid username-password pair or user is disabled.".into(),
            ))
        }
    }
);

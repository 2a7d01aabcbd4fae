//! postqueue(1)'s set-gid door: a local user's mailq, sendmail -bp or postqueue runs this
//! program when it cannot reach public/ itself; it runs oxipost's postqueue with the group
//! privilege that reaches the showq and qmgr sockets there (see lib.rs).

use oxipost_postdrop::Door;

fn main() {
    Door {
        prog: "postqueue",
        module: "oxipost.cli.postqueue",
        usage: "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p \
                | postqueue -s site",
        // Postfix's postqueue exits EX_UNAVAILABLE after any fatal error.
        status: 69,
        flags: b"fjpv",
        valued: b"cis",
    }
    .run()
}

//! postdrop(1)'s set-gid door: local users' sendmail runs this program, which runs
//! oxipost's postdrop with the group privilege that writes into maildrop/ (see lib.rs).

use oxipost_postdrop::Door;

fn main() {
    Door {
        prog: "postdrop",
        module: "oxipost.cli.postdrop",
        usage: "usage: postdrop [-c config_dir] [-v]",
        status: 1,
        flags: b"rv",
        valued: b"c",
    }
    .run()
}

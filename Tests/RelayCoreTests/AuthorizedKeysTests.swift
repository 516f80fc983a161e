import Testing
@testable import RelayCore

@Suite("authorized_keys lines")
struct AuthorizedKeysTests {
    @Test("command=\"…\": shell-quoted, each \" escaped as \\\" (sshd's only escape), backslashes left alone")
    func commandOption() {
        #expect(AuthorizedKeys.commandOption(["borg", "serve", "--append-only"]) == #"command="borg serve --append-only""#)
        #expect(AuthorizedKeys.commandOption(["borg", "serve", "--restrict-to-repository", #"/srv/a "b" c\d"#])
                == #"command="borg serve --restrict-to-repository '/srv/a \"b\" c\d'""#)
        #expect(AuthorizedKeys.commandOption(["x", #"\""#]) == #"command="x '\\"'""#)
        #expect(AuthorizedKeys.serveOptions(appendOnly: true, repository: "/srv/r")
                == #"command="borg serve --append-only --restrict-to-repository /srv/r",restrict"#)
    }
}

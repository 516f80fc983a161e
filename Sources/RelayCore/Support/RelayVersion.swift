/// The version of borg-relay, in one place (metrics' build_info, `--version`).
public enum RelayVersion {
    public static let current = "0.9.0"
}

import Foundation
import TOMLKit

/// Group names to gids through the group database (getgrnam_r), numeric gids as they are.
public enum GroupLookup {
    public static func gid(of name: String) -> gid_t? {
        if let n = UInt32(name), name.allSatisfy(\.isNumber) { return gid_t(n) }
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let rc = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
        guard rc == 0, let r = result else { return nil }
        return r.pointee.gr_gid
    }

    /// The name of `gid`, or the number as text.
    public static func name(of gid: gid_t) -> String {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        guard getgrgid_r(gid, &entry, &buffer, buffer.count, &result) == 0, let r = result, let n = r.pointee.gr_name else {
            return String(gid)
        }
        return String(cString: n)
    }
}

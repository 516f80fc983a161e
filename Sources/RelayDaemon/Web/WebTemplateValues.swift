import Mustache
import RelayCore

// The fleet page's values answer the template's lookups directly instead of through
// Mirror, which made a 200-client page take hundreds of milliseconds. Every stored property
// is listed; WebTemplateValuesTests checks each against Mirror, so a new field cannot be
// forgotten here.

extension PageFrame: MustacheParent {
    func child(named name: String) -> Any? {
        switch name {
        case "title": return title
        case "relay": return relay
        case "version": return version
        case "user": return user
        case "csrf": return csrf
        case "canAct": return canAct
        case "refresh": return refresh
        case "message": return message
        case "login": return login
        case "fleet": return fleet
        case "client": return client
        case "run": return run
        default: return nil
        }
    }
}

extension FleetPageView: MustacheParent {
    public func child(named name: String) -> Any? {
        switch name {
        case "relay": return relay
        case "generated": return generated
        case "running": return running
        case "queued": return queued
        case "maxParallel": return maxParallel
        case "clientCount": return clientCount
        case "counts": return counts
        case "rows": return rows
        default: return nil
        }
    }
}

extension FleetRowView: MustacheParent {
    public func child(named name: String) -> Any? {
        switch name {
        case "name": return self.name
        case "health": return health
        case "healthClass": return healthClass
        case "server": return server
        case "lastSuccess": return lastSuccess
        case "lastRun": return lastRun
        case "lastRunState": return lastRunState
        case "lastError": return lastError
        case "strip": return strip
        case "stripHTML": return stripHTML
        case "stripSummary": return stripSummary
        case "lastOriginal": return lastOriginal
        case "lastDeduplicated": return lastDeduplicated
        case "lastArchive": return lastArchive
        case "nextRun": return nextRun
        case "schedule": return schedule
        case "lastCheck": return lastCheck
        case "lastCheckClass": return lastCheckClass
        case "current": return current
        case "currentRun": return currentRun
        default: return nil
        }
    }
}

extension StripCellView: MustacheParent {
    public func child(named name: String) -> Any? {
        switch name {
        case "mark": return mark
        case "label": return label
        default: return nil
        }
    }
}

extension TimeText: MustacheParent {
    public func child(named name: String) -> Any? {
        switch name {
        case "iso": return iso
        case "absolute": return absolute
        case "relative": return relative
        default: return nil
        }
    }
}

extension CountView: MustacheParent {
    public func child(named name: String) -> Any? {
        switch name {
        case "label": return label
        case "cssClass": return cssClass
        case "count": return count
        default: return nil
        }
    }
}

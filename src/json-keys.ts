// JSON lets an object name a member twice, and JSON.parse keeps the last
// one, while a proxy, a WAF or a log in front may read the first. A body
// that names a member twice is refused, so that what was checked in front
// is what the gateway acts on.

/** An object's key state while `json` is scanned: the keys seen, and whether the next string is a key. */
interface ObjectScope { keys: Set<string>, keyNext: boolean }

/**
 * Whether some object in `json` names a member twice, however the key is
 * spelt (`"s\u0075b"` is `"sub"`). `json` must already have parsed.
 */
export function repeatsKeys (json: string): boolean {
  const scopes: Array<ObjectScope | null> = []
  for (let i = 0; i < json.length; i++) {
    const c = json[i]
    const top = scopes[scopes.length - 1]
    if (c === '"') {
      const end = stringEnd(json, i)
      if (top?.keyNext === true) {
        const key = JSON.parse(json.slice(i, end + 1)) as string
        if (top.keys.has(key)) return true
        top.keys.add(key)
        top.keyNext = false
      }
      i = end
    } else if (c === '{') scopes.push({ keys: new Set(), keyNext: true })
    else if (c === '[') scopes.push(null)
    else if (c === '}' || c === ']') scopes.pop()
    else if (c === ',' && top) top.keyNext = true
  }
  return false
}

/** Where the JSON string opening at `start` closes. */
function stringEnd (json: string, start: number): number {
  let i = start + 1
  while (json[i] !== '"') i += json[i] === '\\' ? 2 : 1
  return i
}

// Recording names, and sometimes the folders above them, hold callers'
// phone numbers. A run of 9 or more decimal digits (of any script: a
// full-width ４６７… is one too) is taken for one; dates (8 digits) and
// times stay readable.
const PHONE_LIKE = /\p{Nd}{9,}/u
const PHONE_LIKE_ALL = /\p{Nd}{9,}/gu

export function holdsPhoneNumber (text: string): boolean {
  return PHONE_LIKE.test(text)
}

/** The text with each run that may be a phone number cut to its first two digits and an ellipsis. */
export function maskPhoneNumbers (text: string): string {
  return text.replace(PHONE_LIKE_ALL, (run) => `${[...run].slice(0, 2).join('')}…`)
}

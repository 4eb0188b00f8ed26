// What is taken for a phone number in a name that stays readable (an
// upload's directories, the probe's output): 9 or more decimal digits of
// any script, together or as numbers are written; dates and times are not.
import t from 'tap'
import { holdsPhoneNumber, maskPhoneNumbers } from '../../src/policy/phone-numbers.js'

t.test('phone numbers, as they are written', async (t) => {
  const numbers = [
    '46701234567', '0701234567', '+46701234567', 'caller_0701234567_x', '101500_46701234599.wav', '123456789',
    '+46 70 123 45 67', '070-123 45 67', '070.123.45.67', '(070)1234567', '(070) 123 45 67', '46 (0)70 123 45 67',
    '４６７０１２３４５６７', '٤٦٧٠١٢٣４٥٦٧', '४६७०१२३४५६७',
    '4670\u200b1234567', '4670\u00ad1234567', '4670\u20601234567', '4670\u034f1234567', '4\u20e36\u20e37\u20e30\u20e31\u20e32\u20e33\u20e34\u20e35\u20e3',
    '20261129_46701234567', '2026112946701234567', '20261129101500 0701234567',
    // A date beside the number, in one run: it must not take the number's first digits for a time.
    '20261129 0701234567', '2026-11-29 070-123 45 67', '20261129 0701 23 45 67', '2026-11-29 10.15.00 0701234567', '0701234567 20261129',
    '2026-11-29_10-15-00_+46701234567', '20261129_101500_46701234567',
    // Other ways numbers are written: underscores for spaces, typographic dashes.
    '+46_70_123_45_67', '070–123–4567', '070—123 45 67', '070\u2011123\u20114567', '070\u00a0123\u00a045\u00a067',
    // Read as a date and then 101500 001 as well as a date, a time and 001: a name stays readable only if no reading holds a number.
    '20261129_101500_001'
  ]
  for (const n of numbers) t.ok(holdsPhoneNumber(n), `${JSON.stringify(n)}: taken for a phone number`)
})

t.test('dates, times and short numbers stay readable', async (t) => {
  const readable = [
    '2026', '11', '29', '20261129', '20261129_101500', '2026-11-29', '2026-11-29 10.15.00', '20261129101500', '202611291015',
    'team a', '12345678', '1 2 3 4', 'rec_001_20261129', 'v1.2.3', '001', '',
    '20261129_101500_01', '2026-11-29_10-15-00', '2026–11–29', '001_20261129_101500', '20261129 20261130', '12_20261129_34'
  ]
  for (const r of readable) t.notOk(holdsPhoneNumber(r), `${JSON.stringify(r)}: readable`)
})

t.test('masking keeps the first two digits of each number', async (t) => {
  t.equal(maskPhoneNumbers('/calls/46701234567/x/'), '/calls/46…/x/')
  t.equal(maskPhoneNumbers('/a/0701234567_b_0709876543/'), '/a/07…_b_07…/')
  t.equal(maskPhoneNumbers('/calls/+46 70 123 45 67/'), '/calls/+46…/', 'a number as it is written')
  t.equal(maskPhoneNumbers('/calls/4670\u200b1234567/'), '/calls/46…/', 'an invisible character does not hide it')
  t.equal(maskPhoneNumbers('/2026/11/29/'), '/2026/11/29/', 'dates stay')
  t.equal(maskPhoneNumbers('/2026-11-29 10.15.00/'), '/2026-11-29 10.15.00/', 'so do times')
  t.equal(maskPhoneNumbers('/４６７０１２３４５６７/'), '/４６…/', 'full-width digits, by character')
  t.equal(maskPhoneNumbers('/x/'), '/x/')
  t.equal(maskPhoneNumbers('/2026/11/20261129 0701234567/'), '/2026/11/20…/', 'a date beside a number does not keep it readable')
})

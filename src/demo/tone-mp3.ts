// A one-second 440 Hz tone, MPEG-2 Layer III, 16 kHz mono, 24 kbit/s.
// Encoded once with LAME from a sox-generated sine; kept as data so the demo
// NAS can serve a real, playable MP3 without an encoder at run time.
export const TONE_MP3_BASE64 =
  '//M4xAAQYFIFcghYJG0CTOqPkDxUfKg8i88cXkAIGCgY5zLh6CBcecD63lyjigIB/Lp6OCEHz4YnOI8T/wQcHxOU4IazmrhjLvWH' +
  'uHyZReU8ciMKXQFQI4EVaYgQY9iYbABCZMbTGB1IHBte//M4xB0UmL5EANdScZs6ixu4XxpAfBkagZi+LAGJkeEMHAoXfUaZqtRh' +
  '71Q7J4cEZYyJCNRV7C6TmJ0rFlC06ORXqgYHbZHKO2ZdDMGP+v1CUIhR08SkOugwGD8waG4SZc6uDM+VRk0AB0zM//M4xCkc+Opx' +
  'uM9yaRhMPSPM4xNMPgBPXgdpNgIFfGcaFDS1BEOEAl7lU1cLOWKwFwG/aa7UljEih2IzE/LZVQ0l+lq1LdkqJBZUVSxIcVlQ2RVL' +
  'Epm7Kcdf/IeSJMLCDIB0zRHM1bjQKswG//M4xBQVSHosAN/6ZDBHDAugiswc8ZQMpu/jDWQSEIwYIHdM1R0OitJND01M8REMUgTA' +
  'QhBwIp5NMgCO1iTWs//Z///9v1b/9/1UO//1Kv//+G0hAUHjQyIicxpiNTrTAnASYwR8I3MJuGPD//M4xB0UWH4sAN/6ZDDnz+Nn' +
  'CIWDDQQuM3HdE6y/g0bUwzdEUxGBADBmEAQhuoI1iN0m/Z//s//+z/Z///0//2U1///3xJAYgHzAxwzkWDNU7EHMEcALDB9QFsxF' +
  'ICwNZ3C9DvegWIxPUHnM//M4xCoWAHooAN/0aBfQoEwKIdEMArClAoBTiGAMGyUMnewB+IPojf/fuVqq3f/V/rot+vbXp//9ye7/' +
  '7/ylL4wgLMhHDOUQ0BpNVnjAgAQkwO8IGMI2F9TMY/Ds2lofHMINBljJwxTl36jP//M4xDEUcHosAN/6ZKXAziFkxLBwwcAUIA5P' +
  'l75LKrL//f/u////r//b///Trf//+ULHDggOGgSSGCrJm04YDiCFmBpBAhg5otyZH1woml3j0phQgUIbBLcc53SZ/HSZlBQYfgGG' +
  'BQJAOmou//M4xD4TYHowAN/6ZLduMZ///1/////////7vrX///eghAEgBQGAiYTAKEFeZLBIZ7iybaFcfjuKacsfFnSyhUpiMgPc' +
  'YLcEeGB8jKpgKQR2YAoBGCHUgSIQ1DGVv3CKN3//6///7f1///Uq//M4xE8TiHosAO/yhP//+VJymDEGWLmubm7oHU9mBCgZxgeg' +
  'M+YR+JqGYvYohtJYyMYRoCNmJZzG8H2mYq2mWorGHANmCYCBAAq6kNBS2nf//////+/////7PVX///p1cDweCiEwQrCi8ZHQ//M4' +
  'xF8TmHowANf6ZJgKwIkYFOEKmC2C9RjgPTEZ2EPwGEThPprqoZ0FIxoOVRmmC4OIQSC8aARPtdDsSvD//+r//////////Ur///gt' +
  'HQZA0VAgMDIxEAgx9DUzSG413N89Alo0N9YGOOmD//M4xG8TGHowAN/6ZFow9cHlMFZB+TBJhXIwGsHmMA1AdTAoEZqDCq7KH4kd' +
  '7v//9n/////////+iv/v/EU0gANMqYNiyOBJPDsMCYAtzBFQXIwoIRfM2ts9zdCBacwpEDGAAI+YNSIuGBWA//M4xIEToH4wAO/y' +
  'hMkYFIAwnnAZw5a5dMWqy6y/Xf//+kXuUBpiYAYeYEDGYdSGAcgi5gOwQ4YICMEmJdd3pk+JAGYN0E1GsCIHRbFmhQxmbQACxHjw' +
  'YDwFpmMHduUb///r/////+7////W//M4xJEQ6HowANfyaP//+CBkAQsCBVAcoDAxNCEyMFoztKk2kUg+f4M0qCFJOdZE3zEVAmAw' +
  'aQJAMGnGCTAoAhswGICCNO8CIBcFKhYd34En+f/p3dv///+n//0f/RX///jyRoFHGSMmwXnH//M4xKwTOHowAN/6ZHx6rZgVYE0Y' +
  'JkCfmFfh6xnZE/wb62J3GFxAM5gFwKgYLQJdmBJg2ZgSIDQdUplkFyV3Rmmltp3///////V/////9Sr///tsUFg4xQFMUNQKyBWl' +
  'MAWBGDAPQh8wH4YU//M4xL4UWH4sAO/yhDB6/GAw/IgMME/CUzUk1zogpDQsAiJuiIkSYMigCE42WPpN3P//6v/////////9Vf1/' +
  '9ZmFAowMjCggZKBm6LB6tmYK8CcGEyhKJilgyQbSz3qHvIETBjJIeiYUuGrm//M4xMsTyHowANfyaBcxEkYJaGAGBngYZvphk0Zg' +
  'hgJAoBFiOPFHr/D1avWh6jrEoo0auuUZyFJ9lNXquZValj1O0Get/7ul/8/94RUCMAHTHSY0c+NoSznWQwPYCnMG1BWjD2BDs1GO' +
  'x3Os//M4xNoS2HowAN/6ZKBV8xCEAFMCXB8zBfxo4wJ4JeMCmAmz16NBcAiJewFOxad7///937v/+j0eK/8j/t/D0oj///vMWDA0' +
  'xcKMdNjCmUK0hKCKjAQ0YA0MHmEc+JpigQ/+YFYEZGlhKHQJ//M4xO0acHogAN/0aBhoQIRm8AoYSQsGpMBSeDT4bmLv//9f////' +
  '/////+vc/v/7oBcFMEFDAQEw4QNXXTqrIwR8E1MH6CTDESRlE1cDy7O3hIkzFSg4QwlILWMLbHFTBKAnMwNQCaOG5MoW//M4xOIW' +
  'AH4oAN/yaDBhy2CK7E3Ul7lf9qHs6V36tvf/ukvFtd/7bi/XVR0qkPWBTXfV/8P9nwoHmBmBkx2bEonKqh8DOYK6BSGEwArZio4i' +
  '8bdRdlH0/itxi4wHIYJMFmGC3Ed5gTYZ6YFq//M4xOkSuHowAN/6ZAbBvLZlVBgCJeZscHvLFr13ZT5PdyfaP8Weti89ohTpYhd7' +
  'LbdDK37P1NlfxFS0yv//+0vUHBxjAaZEcmLshiFCYAqCHGAaBB5gW4voYnp3BGVdj7AACCzQsRznBeTQ//M4xP0ZCHokAN/0aBJE' +
  'zdBoBEiHBkPASoy0yGKEOf//2f///7P/////skxBTUWqqv//99y5hgoWGBAFGTPFw4WrMDmBKDBmQjcw3oYmNGh7mjlLCE4xGUMx' +
  'MIPCYTCuhbowR0H0MDTAdTgK//M4xPcaKH4gAN/0aAyosBBC8aYjOH7sdt9/0e6z//+r8OJ////v/VRabv/++1UdDgIYmQmxr6Ic' +
  'sdnznhgtQC6YTyBsGK7BhZuQcSufiEHQmMKgwZguoYCYGWScGArBqhgQQG+am4YpWDSA//M4xO0TMHYwAN/6ZMAWYPI80mvoerF6' +
  '3qdR+HMlUmjZ7u3Q9c1R/Rs/Cqq9elT3W21MQU1FMy4xMDBV///6VdQCDTGRAyc6MiYTJZowDYEFMBxB/DBLhckxzPoBM9uHmTAw' +
  'wdoDOKcsxsZ7//M4xPkWMH4oAN/0aBpGawWmI4DA4MRYClWuvE5qr///u////r//////3AfckFm3KJLDzEC85VGLwlaBxkn1cYCy' +
  'A1mBFAbBgjIS2YsYtvmXhhkJgqAIcaeVhvvfmYEKZCBgCE5ZhNNmTmsE//M4xP8ZaH4gAN/0aGVwVDsjjErmqKWSu5jfsV7nLAWJ' +
  'gMgA2IUjWx32p/+7//TU7/mP/f3pMt824q0kKZyvJeakAgYwiwQ6AHAGmYJQFZguhXGBgOaYvBiBp8l9GBwIaZejnJRJowSYQFjo' +
  '//M4xO4TeHowAN/6ZGFsyYEL1ImpurEW8pqyJ03UdZyYBjEnh2VV7Fqlq1L9mmu4X7NXDtnISAUJGgqGQVIgIWNBI0FSIBYAhZAS' +
  'QP/t//YZ6LOm6v/szNUB2WmC/YBw478mYGAAHWJjQQGb//M4xP8agLpIFs/4ZMOm3DqcZ1xtlRmlBcFzsMo0ywJA5BBApL9L1e6W' +
  'UF3T5ZlRppKZ6P3f8t9Nns+R0Sn6auu/1fc2hRoeW2Wp58tyQKCDgWyLdnn1Ea5HUWdl0IYRXhuE/4ia+InyhKX8//M4xPQgSO5g' +
  'Ns+2ZKuaETPs0dv/us/2WrD1jBTCkNFDRooqiv5JLKd/+TRa8r9yoM8q7+pMQU1FMy4xMDCqqqqqqqqqqqqqqqqqqqqqqqqqqqqq' +
  'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq//M4xNES4HosVB44JKqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq' +
  'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq//M4xOQTak3gKDBG/aqqqqqq' +
  'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq' +
  'qqqqqqqqqqqqqqqqqqqq'

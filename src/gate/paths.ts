/** Where playback grants are minted (POST, with a token that may read the path). */
export const GRANTS_PATH = '/_nasguard/grants'
